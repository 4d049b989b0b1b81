package sfu

import (
	"testing"

	"github.com/pion/interceptor"
)

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
