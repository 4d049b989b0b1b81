package bench

import "testing"

// TestPaddingCounted: padding-only packets (the SFU probing a subscriber's link) take RTP
// sequence numbers among the media's; the receiver counts them where the numbers are
// checked, so they are no sequence gap, and they are not media (no packet, no loss).
func TestPaddingCounted(t *testing.T) {
	w := &window{}
	w.start.Store(1)
	rx := newTrackRx(w)
	media := func(seq uint16, counter uint32) {
		b := make([]byte, 12+100)
		putHeader(b, 96, seq, 0, 7, true)
		putTrailer(b[12:], 1, counter)
		rx.packet(b, now(), 0)
	}
	pad := func(seq uint16) {
		b := make([]byte, 12+200)
		putHeader(b, 96, seq, 0, 7, false)
		b[0] |= 0x20
		b[len(b)-1] = 200
		rx.packet(b, now(), 0)
	}
	media(65533, 0)
	media(65534, 1)
	pad(65535)
	pad(0)
	media(1, 2)
	media(3, 3) // 2 lost
	if rx.packets != 4 || rx.padding != 2 || rx.seqMin != 65533 || rx.seqMax != 65539 || rx.jumps != 0 {
		t.Errorf("4 media packets and 2 of padding, one number lost: packets %d, padding %d, sequence numbers %d..%d, jumps %d",
			rx.packets, rx.padding, rx.seqMin, rx.seqMax, rx.jumps)
	}
}
