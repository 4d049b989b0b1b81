package sfu

import (
	"testing"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
)

// TestPacerLendsAttributes: a write without attributes reaches the estimator's writer with
// an empty map it may fill, which costs no allocation; a caller's own map goes through.
func TestPacerLendsAttributes(t *testing.T) {
	p := newPacer()
	var got interceptor.Attributes
	var lenAtEntry int
	p.AddStream(7, interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		got, lenAtEntry = a, len(a)
		a.Set("twcc-ext-id", uint8(3)) // what pion's estimator does; panics on a nil map
		return len(payload), nil
	}))
	h := &rtp.Header{SSRC: 7}
	for i := range 3 {
		if _, err := p.Write(h, []byte{1}, nil); err != nil {
			t.Fatal(err)
		}
		if got == nil || lenAtEntry != 0 {
			t.Fatalf("write %d: the writer got %v with %d entries, want an empty map", i, got, lenAtEntry)
		}
	}
	own := interceptor.Attributes{"k": 1}
	if _, err := p.Write(h, []byte{1}, own); err != nil {
		t.Fatal(err)
	}
	if got["k"] != 1 {
		t.Errorf("the caller's attributes were replaced: %v", got)
	}
	payload := []byte{1}
	if n := testing.AllocsPerRun(100, func() { p.Write(h, payload, nil) }); n != 0 && !raceEnabled {
		t.Errorf("a write allocates %v times, want 0", n) // under -race, sync.Pool drops some of what it is given
	}
	if _, err := p.Write(&rtp.Header{SSRC: 8}, nil, nil); err == nil {
		t.Error("a write to an unknown ssrc succeeded")
	}
}

// TestAttrLender: each read of a stream gets the stream's map, emptied; a read that
// overlaps another gets none (pion then makes its own) rather than sharing it.
func TestAttrLender(t *testing.T) {
	var lent interceptor.RTPReader
	var seen []interceptor.Attributes
	var lens []int
	depth := 0
	base := interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		seen, lens = append(seen, a), append(lens, len(a))
		if a != nil {
			a.Set("header", depth)
		}
		if depth == 0 && len(seen) == 2 { // the second read overlaps a third
			depth++
			lent.Read(b, nil)
			depth--
		}
		return len(b), a, nil
	})
	lent = (&attrLender{}).BindRemoteStream(&interceptor.StreamInfo{SSRC: 1}, base)
	buf := make([]byte, 12)
	for range 2 {
		if _, _, err := lent.Read(buf, nil); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("%d reads reached the stream, want 3", len(seen))
	}
	if seen[0] == nil || lens[0] != 0 || lens[1] != 0 {
		t.Errorf("reads got maps with %v entries, want empty maps", lens[:2])
	}
	if seen[2] != nil {
		t.Errorf("the overlapping read got a map (%v), want none", seen[2])
	}
	if n := testing.AllocsPerRun(100, func() { lent.Read(buf, nil) }); n != 0 {
		t.Errorf("a read allocates %v times, want 0", n)
	}
	own := interceptor.Attributes{}
	if _, a, _ := lent.Read(buf, own); a == nil || len(own) == 0 {
		t.Error("a caller's own attributes were not passed through")
	}
}
