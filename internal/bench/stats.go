package bench

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
)

// window is the measured interval on the bench clock. A packet belongs to it when its send
// time does; warm-up packets and packets sent after it are not counted anywhere.
type window struct {
	start, end atomic.Int64 // 0: not yet set
}

func (w *window) contains(sent int64) bool {
	s := w.start.Load()
	if s == 0 || sent < s {
		return false
	}
	e := w.end.Load()
	return e == 0 || sent <= e
}

// maxSamples bounds the latency samples one received track keeps (about 4 hours of a
// 60-packet/s stream); later packets are still counted.
const maxSamples = 1 << 20

// trackRx is what one subscriber saw of one incoming RTP stream (one pion TrackRemote, or
// one floor-relay socket). Its reader goroutine updates it; the collector reads it under mu.
type trackRx struct {
	w *window

	mu      sync.Mutex
	first   int64   // receive time of the first bench packet (0: none yet)
	lat     []int64 // send to the reader's read, ns
	latSock []int64 // send to the kernel's receive on the client's socket, ns
	noSock  int64   // packets in the window without a socket receive time
	packets int64   // in the window (duplicates not counted)
	dups    int64
	bytes   int64            // RTP bytes in the window
	byStr   map[uint32]*seen // in the window
	// Runs of consecutive packets of one publisher stream (the SFU switches a subscriber
	// between simulcast layers): each closed run's span of counters, first to last, and
	// packets, per stream; then the open run.
	runs map[uint32]*runTotal
	run  struct {
		stream      uint32
		first, last uint32
		packets     int64
		open        bool
	}
	any map[uint32]bool // every stream seen, in the window or not
	// RTP sequence numbers of the packets in the window: extended, lowest and highest.
	seqInit        bool
	maxExt         int64 // highest extended sequence number seen
	lastSeq        uint16
	jumps          int64    // in the window: sequence number steps of more than 1000 either way
	jumpEx         []string // the first few, "from->to"
	seqMin, seqMax int64    // lowest and highest in the window
	padding        int64    // padding-only packets read in the window
}

// seen is the set of a publisher stream's counters one track received in the window.
type seen struct {
	base uint32
	bits []uint64
}

// add records counter c and says whether it is new.
func (s *seen) add(c uint32) bool {
	if s.bits == nil {
		s.base = c &^ 63
	}
	if c < s.base { // before the first one seen (reordered across the window start)
		shift := int((s.base - (c &^ 63)) / 64)
		s.bits = append(make([]uint64, shift), s.bits...)
		s.base = c &^ 63
	}
	i := int(c - s.base)
	for i/64 >= len(s.bits) {
		s.bits = append(s.bits, 0)
	}
	m := uint64(1) << (i % 64)
	if s.bits[i/64]&m != 0 {
		return false
	}
	s.bits[i/64] |= m
	return true
}

func newTrackRx(w *window) *trackRx {
	return &trackRx{w: w, byStr: map[uint32]*seen{}, any: map[uint32]bool{}, runs: map[uint32]*runTotal{}}
}

// runTotal adds up the runs of one stream: counters spanned, packets received.
type runTotal struct{ span, packets int64 }

// addRun records packet counter c of stream (new in the window) in the runs.
func (t *trackRx) addRun(stream, c uint32) {
	r := &t.run
	if r.open && r.stream == stream {
		r.first, r.last = min(r.first, c), max(r.last, c)
		r.packets++
		return
	}
	t.closeRun()
	r.open, r.stream, r.first, r.last, r.packets = true, stream, c, c, 1
}

func (t *trackRx) closeRun() {
	r := &t.run
	if !r.open {
		return
	}
	tot := t.runs[r.stream]
	if tot == nil {
		tot = &runTotal{}
		t.runs[r.stream] = tot
	}
	tot.span += int64(r.last-r.first) + 1
	tot.packets += r.packets
	r.open = false
}

// runTotals returns the runs per stream, the open one included.
func (t *trackRx) runTotals() map[uint32]runTotal {
	out := map[uint32]runTotal{}
	for id, tot := range t.runs {
		out[id] = *tot
	}
	if r := t.run; r.open {
		tot := out[r.stream]
		tot.span += int64(r.last-r.first) + 1
		tot.packets += r.packets
		out[r.stream] = tot
	}
	return out
}

// count is the number of counters seen.
func (s *seen) count() int64 {
	n := 0
	for _, b := range s.bits {
		n += bits.OnesCount64(b)
	}
	return int64(n)
}

// packet records one raw RTP packet read at time at, received by the socket at sock (0:
// unknown), on the bench clock.
func (t *trackRx) packet(b []byte, at, sock int64) {
	payload, seq, ok := rtpPayload(b)
	if !ok {
		return
	}
	stream, counter, sent, ok := readTrailer(payload)
	if !ok {
		if len(payload) == 0 && b[0]&0x20 != 0 {
			// Padding only: the SFU probing the link (its decision 68). It takes sequence
			// numbers, so it counts where they are checked.
			t.mu.Lock()
			t.extend(seq)
			if t.w.contains(at) {
				t.padding++
			}
			t.mu.Unlock()
		}
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.first == 0 {
		t.first = at
	}
	if !t.any[stream] {
		t.any[stream] = true
	}
	prev := t.lastSeq
	ext, jump := t.extend(seq)
	if !t.w.contains(sent) {
		return
	}
	s := t.byStr[stream]
	if s == nil {
		s = &seen{}
		t.byStr[stream] = s
	}
	if jump {
		t.jumps++
		if len(t.jumpEx) < 3 {
			t.jumpEx = append(t.jumpEx, fmt.Sprintf("%d->%d", prev, seq))
		}
	}
	if !s.add(counter) {
		t.dups++
		return
	}
	t.addRun(stream, counter)
	t.packets++
	t.bytes += int64(len(b))
	if len(t.lat) < maxSamples {
		t.lat = append(t.lat, at-sent)
		if sock != 0 {
			t.latSock = append(t.latSock, sock-sent)
		}
	}
	if sock == 0 {
		t.noSock++
	}
	if t.packets == 1 || ext < t.seqMin {
		t.seqMin = ext
	}
	if t.packets == 1 || ext > t.seqMax {
		t.seqMax = ext
	}
}

// extend extends a sequence number over wrap-arounds (with mu held): a packet is taken to
// be within half the sequence space of the highest one seen so far (RFC 3550 A.1,
// simplified). jump: it is more than 1000 from the last one, which is no reordering: the
// sender's numbering broke (a receiver takes it for a burst of loss, or for stale packets
// it drops).
func (t *trackRx) extend(seq uint16) (ext int64, jump bool) {
	if !t.seqInit {
		t.seqInit, t.maxExt = true, int64(seq)
		ext = t.maxExt
	} else {
		if d := int16(seq - t.lastSeq); d > 1000 || d < -1000 {
			jump = true
		}
		d := int64(int16(seq - uint16(t.maxExt)))
		ext = t.maxExt + d
		if d > 0 {
			t.maxExt = ext
		}
	}
	t.lastSeq = seq
	return ext, jump
}

// txStream is what a publisher sent on one stream: the counter of its next packet, and how
// many of its packets were sent in the window.
type txStream struct {
	id       uint32
	counter  uint32
	inWindow atomic.Int64
}

// Quantiles of a sorted sample, nearest rank.
func quantile(sorted []int64, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// median of float values (the mean of the middle two for an even count); NaN for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
