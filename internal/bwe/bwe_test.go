package bwe

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
)

// feedback builds transport-wide feedback as pion's receivers (and the bench's clients)
// do, with pion's recorder: the wire format this package must read.
func feedback(t testing.TB, arrivals map[uint16]int64, from, to uint16) [][]byte {
	t.Helper()
	r := twcc.NewRecorder(1)
	for s := from; s != to; s++ {
		if at, ok := arrivals[s]; ok {
			r.Record(7, s, at)
		}
	}
	var out [][]byte
	for _, p := range r.BuildFeedbackPacket() {
		b, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestEachStatus: every packet pion's recorder reports comes back in order, received or
// not, with its arrival time to the 250 us the format carries, through run-length chunks
// (long runs received, long gaps), one- and two-bit status vectors and large deltas.
func TestEachStatus(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	arrivals := map[uint16]int64{}
	at := int64(5_000_000_000)   // us
	const first, n = 65000, 1500 // across the wrap of the sequence numbers
	for i := range n {
		seq := uint16(first + i)
		switch {
		case i >= 300 && i < 340: // a gap: a run of lost packets
			continue
		case i%17 == 5: // scattered loss
			continue
		case i == 700:
			at += 40_000 // a large delta
		case i == 900:
			at -= 3_000 // reordered: a negative delta
		default:
			at += int64(rng.IntN(2000))
		}
		arrivals[seq] = at
	}
	arrivals[first] = 5_000_000_000
	last := uint16(first)
	last += n - 1
	arrivals[last] = at + 1000
	pkts := feedback(t, arrivals, first, last+1)
	if len(pkts) == 0 {
		t.Fatal("no feedback built")
	}
	seen := 0
	var offset int64 // the reference time is the receiver's, in 64 ms steps: compare differences
	next := uint16(first)
	for _, p := range pkts {
		ssrc, ok := Feedback(p)
		if !ok || ssrc != 7 {
			t.Fatalf("Feedback(%x...) = %d, %v", p[:12], ssrc, ok)
		}
		err := eachStatus(p, func(seq uint16, received bool, arrival int64) {
			if seq != next {
				t.Fatalf("sequence %d, want %d", seq, next)
			}
			next++
			want, sent := arrivals[seq]
			if received != sent {
				t.Fatalf("seq %d: received %v, want %v", seq, received, sent)
			}
			if !received {
				return
			}
			if seen == 0 {
				offset = arrival - want
			}
			if d := arrival - want - offset; d < -250 || d > 250 {
				t.Fatalf("seq %d: arrival %d us off", seq, d)
			}
			seen++
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if seen != len(arrivals) {
		t.Errorf("%d arrivals read, want %d", seen, len(arrivals))
	}
}

// TestMalformedReportsNothing: a packet malformed half-way (its deltas cut short, or an
// invalid status symbol after valid ones) reports none of its packets, not its first part:
// the estimator would otherwise take those for reported and lost or arrived.
func TestMalformedReportsNothing(t *testing.T) {
	good := feedback(t, map[uint16]int64{10: 1000, 11: 1500, 13: 3000, 14: 90_000}, 10, 15)[0]
	if err := eachStatus(good, func(uint16, bool, int64) {}); err != nil {
		t.Fatalf("the well-formed packet: %v", err)
	}
	short := append([]byte{}, good...)
	short = short[:len(short)-4] // the large delta of seq 14 and the padding cut off
	short[0] &^= 0x20            // no padding bit any more
	bad := append([]byte{}, good...)
	bad[0] &^= 0x20 // no padding
	// One chunk: a two-bit status vector whose third symbol is 3, no valid status.
	bad[14], bad[15] = 0, 7
	bad[20], bad[21] = 0xc0|0x10|0x04|0x03, 0x00 // symbols 1, 1, 3, 0, 0, 0, 0
	bad = append(bad[:22], 4, 2)                 // the two small deltas
	for name, p := range map[string][]byte{"deltas cut short": short, "an invalid symbol": bad} {
		n := 0
		if err := eachStatus(p, func(uint16, bool, int64) { n++ }); err == nil {
			t.Errorf("%s: no error", name)
		}
		if n != 0 {
			t.Errorf("%s: %d packets reported", name, n)
		}
	}
}

// TestFeedbackInCompound: split as the down tracks split a compound packet (pion's
// rtcp.AppendRawPackets, which refuses a length beyond the datagram), a receiver report
// is not taken for feedback and the feedback packet is, with its media SSRC.
func TestFeedbackInCompound(t *testing.T) {
	rr, _ := (&rtcp.ReceiverReport{SSRC: 1}).Marshal()
	fb := feedback(t, map[uint16]int64{10: 1000, 12: 3000}, 10, 13)[0]
	got, err := rtcp.AppendRawPackets(nil, append(append([]byte{}, rr...), fb...))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got[0]) != len(rr) || len(got[1]) != len(fb) {
		t.Fatalf("split into %d packets", len(got))
	}
	if _, ok := Feedback(got[0]); ok {
		t.Error("a receiver report taken for feedback")
	}
	if ssrc, ok := Feedback(got[1]); !ok || ssrc != 7 {
		t.Errorf("feedback: %d, %v", ssrc, ok)
	}
	if _, err := rtcp.AppendRawPackets(nil, fb[:len(fb)-4]); err == nil {
		t.Error("a truncated packet passed")
	}
}

// FuzzEachStatus: whatever arrives, reading it neither panics nor reports more packets
// than the count it declares.
func FuzzEachStatus(f *testing.F) {
	f.Add(feedback(f, map[uint16]int64{1: 100, 2: 400, 40: 90_000, 41: 80_000}, 1, 42)[0])
	f.Add(make([]byte, twccMinSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		err := eachStatus(b, func(uint16, bool, int64) { n++ })
		if err != nil && n > 0 {
			t.Fatalf("%d statuses reported from a packet then refused: %v", n, err)
		}
		if len(b) >= 16 && n > int(b[14])<<8|int(b[15]) {
			t.Fatalf("%d statuses, %d declared", n, int(b[14])<<8|int(b[15]))
		}
		e := New(Config{Initial: 1_000_000})
		e.OnFeedback(b, int64(time.Second))
	})
}

// link is a bottleneck as tbf makes one: a rate, a queue that holds at most limit of
// delay, drops beyond it; a fixed path delay besides.
type link struct {
	rate  float64 // bit/s
	limit time.Duration
	busy  int64 // us: when the queue empties
}

// pass reports when a packet of size bytes sent at us arrives, or false if dropped.
// tbfLimit is how much delay tc's tbf queues at rate (bit/s) with the netns browser test's
// burst (16 KB) and latency (50 ms): the latency plus the burst's time at the rate (tbf's
// limit is latency times rate plus burst, in bytes): 268 ms at 600 kbit/s, 1.36 s at 100.
func tbfLimit(rate float64) time.Duration {
	return 50*time.Millisecond + time.Duration(16*1024*8/rate*float64(time.Second))
}

func (l *link) pass(at int64, size int) (int64, bool) {
	start := max(at, l.busy)
	if start-at > l.limit.Microseconds() {
		return 0, false
	}
	l.busy = start + int64(float64(size*8)/l.rate*1e6)
	return l.busy + 20_000, true
}

// sim sends, for d, what a layer choice would send under e's estimate (the largest of
// layers, bit/s, within 95% of it) through l in 1200-byte packets; a receiver records
// arrivals as they happen and feeds back every 100 ms, as pion's receivers do. It returns
// the layer sent at the end and the share lost in the last second.
func sim(t *testing.T, e *Estimator, l *link, layers []float64, start int64, d time.Duration) (float64, float64) {
	t.Helper()
	return simSwitching(t, e, l, layers, start, d, 0)
}

// simSwitching is sim with a layer choice that takes effect switchDelay after it is made,
// as the SFU's does: a lower layer is forwarded from its next key frame on, which the
// publisher sends a round trip and an encoding after it is asked.
func simSwitching(t *testing.T, e *Estimator, l *link, layers []float64, start int64, d, switchDelay time.Duration) (float64, float64) {
	t.Helper()
	type arrival struct {
		seq uint16
		at  int64
	}
	var (
		rec                = twcc.NewRecorder(1)
		inFlight           []arrival
		seq                uint16
		layer              float64
		sentLast, lostLast int
	)
	end := start + d.Microseconds()
	next := start
	var chosen float64
	var chosenAt int64
	for now := start; now < end; now += 1000 { // us on both clocks (the estimator sees ns)
		want := 0.0 // paused
		for _, r := range layers {
			if r <= 0.95*float64(e.Target()) {
				want = r
			}
		}
		if want != chosen {
			chosen, chosenAt = want, now
		}
		if layer == 0 || now-chosenAt >= switchDelay.Microseconds() {
			layer = chosen
		}
		if layer == 0 {
			layer = 50_000 // paused: the audio alone
		}
		if now >= next {
			e.Sent(seq, 1200, now*1000)
			at, ok := l.pass(now, 1200)
			if ok {
				inFlight = append(inFlight, arrival{seq, at})
			}
			if now > end-1_000_000 {
				sentLast++
				if !ok {
					lostLast++
				}
			}
			seq++
			next += int64(1200 * 8 / layer * 1e6)
		}
		for len(inFlight) > 0 && inFlight[0].at <= now {
			rec.Record(7, inFlight[0].seq, inFlight[0].at)
			inFlight = inFlight[1:]
		}
		if now%100_000 == 0 {
			for _, p := range rec.BuildFeedbackPacket() {
				b, err := p.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				if err := e.OnFeedback(b, now*1000); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return layer, float64(lostLast) / float64(max(sentLast, 1))
}

// TestEstimatorFollowsBottleneck: three layers (150, 450 and 900 kbit/s) over a link
// capped as the netns browser test caps one (tbf, its queue as long as tbfLimit). Free, the top layer
// is sent and nothing is lost; capped at 600 kbit/s, within 5 s the middle layer is sent
// and goes through without loss; capped at 100 kbit/s, the estimate falls under the
// lowest layer (150 kbit/s).
func TestEstimatorFollowsBottleneck(t *testing.T) {
	layers := []float64{150_000, 450_000, 900_000}
	e := New(Config{Initial: 1_500_000})
	l := &link{rate: 10_000_000, limit: 50 * time.Millisecond}
	layer, loss := sim(t, e, l, layers, 1_000_000, 5*time.Second)
	st := e.Stats()
	t.Logf("free: layer %.0f, loss %.1f%%; %v", layer, 100*loss, st)
	if layer != 900_000 || loss != 0 || st.Loss != 0 {
		t.Fatalf("free link: layer %.0f, loss %.3f, estimator %v", layer, loss, st)
	}
	l.rate, l.limit = 600_000, tbfLimit(600_000)
	layer, loss = sim(t, e, l, layers, 6_000_000, 5*time.Second)
	st = e.Stats()
	t.Logf("600 kbit/s: layer %.0f, loss %.1f%%; %v", layer, 100*loss, st)
	if layer != 450_000 || loss > 0.01 {
		t.Fatalf("capped at 600 kbit/s: layer %.0f, loss %.3f, estimator %v", layer, loss, st)
	}
	l.rate, l.limit = 100_000, tbfLimit(100_000)
	layer, _ = sim(t, e, l, layers, 11_000_000, 5*time.Second)
	st = e.Stats()
	t.Logf("100 kbit/s: estimator %v", st)
	if st.Target >= 150_000 {
		t.Fatalf("capped at 100 kbit/s: estimator %v, layer %.0f", st, layer)
	}
}

// TestEstimatorKeepsALowerLayer: the camera's layers as Chromium sends them (130, 370 and
// 1300 kbit/s) over a free link, then capped at 600 kbit/s (tbf: 268 ms of queue), with a
// layer choice that takes effect half a second after it is made (the SFU waits for the
// lower layer's key frame, and meanwhile forwards the top one into the cap). The loss and
// the queue of those packets are one congestion, not one per feedback: the estimate comes
// down to a layer that fits and stays there; it never falls under the lowest layer, which
// would pause the video on a link that carries it four times over.
func TestEstimatorKeepsALowerLayer(t *testing.T) {
	layers := []float64{130_000, 370_000, 1_300_000}
	for _, delay := range []time.Duration{200 * time.Millisecond, 500 * time.Millisecond, time.Second} {
		e := New(Config{Initial: 1_500_000})
		l := &link{rate: 10_000_000, limit: 50 * time.Millisecond}
		if layer, _ := simSwitching(t, e, l, layers, 1_000_000, 5*time.Second, delay); layer != 1_300_000 {
			t.Fatalf("free link: layer %.0f; %v", layer, e.Stats())
		}
		l.rate, l.limit = 600_000, tbfLimit(600_000)
		start := int64(6_000_000)
		least := math.Inf(1)
		for i := range 16 { // 8 s in steps of half a second
			simSwitching(t, e, l, layers, start+int64(i)*500_000, 500*time.Millisecond, delay)
			least = min(least, float64(e.Target()))
		}
		layer, loss := simSwitching(t, e, l, layers, start+8_000_000, 2*time.Second, delay)
		t.Logf("switching %v after the choice, capped at 600 kbit/s: least target %.0f kbit/s; at the end layer %.0f, loss %.1f%%; %v",
			delay, least/1000, layer, 100*loss, e.Stats())
		if least < 0.95*130_000 || layer != 370_000 || loss > 0.01 {
			t.Errorf("switching %v after the choice, capped at 600 kbit/s: the target fell to %.0f kbit/s; at the end layer %.0f, loss %.3f",
				delay, least/1000, layer, loss)
		}
	}
}

// TestEstimatorCutsAfterCalm: what counts since the last cut is not diluted by a long calm
// after it: a minute after the 600 kbit/s cap was answered, the link narrows to 200 kbit/s
// and the estimate follows within 5 s (by the queue it grows); and after a calm minute a
// link that drops a third of the packets at random, without queueing, takes a quarter off
// the estimate within 3 s (by the loss).
func TestEstimatorCutsAfterCalm(t *testing.T) {
	layers := []float64{130_000, 370_000, 1_300_000}
	e := New(Config{Initial: 1_500_000})
	l := &link{rate: 10_000_000, limit: 50 * time.Millisecond}
	simSwitching(t, e, l, layers, 1_000_000, 5*time.Second, 500*time.Millisecond)
	l.rate, l.limit = 600_000, tbfLimit(600_000)
	simSwitching(t, e, l, layers, 6_000_000, 60*time.Second, 500*time.Millisecond)
	calm := e.Stats()
	l.rate, l.limit = 200_000, tbfLimit(200_000)
	layer, _ := simSwitching(t, e, l, layers, 66_000_000, 5*time.Second, 500*time.Millisecond)
	narrow := e.Stats()
	t.Logf("a minute at 600 kbit/s: %v; 5 s at 200 kbit/s: layer %.0f, %v", calm, layer, narrow)
	if narrow.Target >= 200_000 || layer != 130_000 {
		t.Errorf("narrowed to 200 kbit/s after a calm minute: layer %.0f, %v", layer, narrow)
	}
	// Random loss without a queue: a third of what is sent never arrives.
	e2 := New(Config{Initial: 1_000_000})
	now := int64(time.Second)
	seq := uint16(0)
	round := func(lossy bool) {
		arrivals := map[uint16]int64{}
		from := seq
		for i := range 50 {
			e2.Sent(seq, 1200, now)
			if !lossy || i%3 != 0 {
				arrivals[seq] = now/1000 + 10_000
			}
			seq++
			now += int64(2 * time.Millisecond)
		}
		for _, p := range feedback(t, arrivals, from, seq) {
			e2.OnFeedback(p, now)
		}
	}
	for range 5 { // a quarter of a second: one cut
		round(true)
	}
	for range 600 { // a minute without loss
		round(false)
	}
	before := e2.Stats()
	for range 30 { // 3 s of loss: a cut each time the loss of packets sent since the last one shows (lossGrace, then the average)
		round(true)
	}
	after := e2.Stats()
	t.Logf("random loss after a calm minute: %v -> %v", before, after)
	if after.Target > before.Target*3/4 {
		t.Errorf("a third lost after a calm minute: the estimate went from %v to %v", before, after)
	}
}

// TestEstimatorLoss: random loss above 10% cuts the estimate and shows in Stats; feedback
// about packets never sent, or reported twice, changes nothing.
func TestEstimatorLoss(t *testing.T) {
	e := New(Config{Initial: 1_000_000})
	now := int64(time.Second)
	seq := uint16(0)
	for round := range 20 {
		arrivals := map[uint16]int64{}
		from := seq
		for i := range 50 {
			e.Sent(seq, 1200, now)
			if i%4 != 0 { // a quarter lost
				arrivals[seq] = now/1000 + 10_000
			}
			seq++
			now += int64(2 * time.Millisecond)
		}
		for _, p := range feedback(t, arrivals, from, seq) {
			e.OnFeedback(p, now)
			if round == 19 {
				before := e.Stats()
				e.OnFeedback(p, now+1) // again: already reported
				if after := e.Stats(); after != before {
					t.Errorf("a repeated feedback changed the estimator: %v -> %v", before, after)
				}
			}
		}
	}
	st := e.Stats()
	if st.Loss < 0.2 || st.Loss > 0.3 || st.Target >= 1_000_000 {
		t.Errorf("a quarter lost: %v", st)
	}
	// A feedback a second later counts the last round's missing packets lost (no feedback
	// reported them received within lossGrace); one about packets never sent, after it,
	// changes nothing.
	for _, p := range feedback(t, map[uint16]int64{seq + 200: 1}, seq+200, seq+201) {
		e.OnFeedback(p, now+int64(time.Second))
	}
	before := e.Stats()
	for _, p := range feedback(t, map[uint16]int64{seq + 100: 1, seq + 101: 2}, seq+100, seq+102) {
		e.OnFeedback(p, now+2*int64(time.Second))
	}
	if after := e.Stats(); after != before {
		t.Errorf("feedback about packets never sent changed the estimator: %v -> %v", before, after)
	}
}

// TestEstimatorLateArrival: packets overtaken by later ones are reported missing by one
// feedback and received by the next (as Chromium does); they are not lost, and the
// estimate holds. A packet still missing after lossGrace is lost.
func TestEstimatorLateArrival(t *testing.T) {
	e := New(Config{Initial: 1_000_000})
	now := int64(time.Second)
	seq := uint16(0)
	for range 40 {
		from := seq
		arrivals := map[uint16]int64{}
		for range 50 {
			e.Sent(seq, 1200, now)
			arrivals[seq] = now/1000 + 10_000
			seq++
			now += int64(2 * time.Millisecond)
		}
		// Every tenth packet is late: the first feedback, sent before it came, says missing.
		early := map[uint16]int64{}
		for s, at := range arrivals {
			if s%10 != 3 {
				early[s] = at
			}
		}
		for _, p := range feedback(t, early, from, seq) {
			e.OnFeedback(p, now)
		}
		for _, p := range feedback(t, arrivals, from, seq) {
			e.OnFeedback(p, now+int64(20*time.Millisecond))
		}
	}
	if st := e.Stats(); st.Loss != 0 || st.Target < 1_000_000 {
		t.Errorf("late packets taken for lost: %v", st)
	}
	// Now one packet (seq+1) never arrives: lost once lossGrace has passed, not before.
	for i := range uint16(3) {
		e.Sent(seq+i, 1200, now)
	}
	for _, p := range feedback(t, map[uint16]int64{seq: now/1000 + 10_000, seq + 2: now/1000 + 10_000}, seq, seq+3) {
		e.OnFeedback(p, now+int64(10*time.Millisecond))
	}
	if st := e.Stats(); st.Loss != 0 {
		t.Errorf("a missing packet counted lost before lossGrace: %v", st)
	}
	e.Sent(seq+3, 1200, now+int64(lossGrace))
	for _, p := range feedback(t, map[uint16]int64{seq + 3: now/1000 + 10_000 + lossGrace.Microseconds()}, seq+3, seq+4) {
		e.OnFeedback(p, now+int64(lossGrace)+int64(20*time.Millisecond))
	}
	if st := e.Stats(); st.Loss == 0 {
		t.Errorf("a packet missing for lossGrace not counted lost: %v", st)
	}
}

// TestEstimatorConcurrent: senders on several goroutines and a feedback reader at once
// (for the race detector).
func TestEstimatorConcurrent(t *testing.T) {
	e := New(Config{Initial: 1_000_000})
	var seq sync.Mutex
	next := uint16(0)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				seq.Lock()
				s := next
				next++
				seq.Unlock()
				e.Sent(s, 1000, time.Now().UnixNano())
			}
		}()
	}
	for i := range 200 {
		arr := map[uint16]int64{}
		for s := uint16(i * 40); s < uint16(i*40+40); s++ {
			arr[s] = int64(i) * 1000
		}
		for _, p := range feedback(t, arr, uint16(i*40), uint16(i*40+40)) {
			e.OnFeedback(p, time.Now().UnixNano())
		}
	}
	wg.Wait()
	_ = e.Stats()
}

// TestSlot: a slot gives back its sequence number, size and send time, also when the
// send time's low bits wrapped between the send and the feedback.
func TestSlot(t *testing.T) {
	for _, at := range []int64{0, 5_000_000, 1<<timeBits - 10, 3<<timeBits + 7} {
		v := packSlot(65535, 1236, at)
		if uint16(v>>48) != 65535 || v>>timeBits&sizeMask != 1236 || v&reportedBit != 0 {
			t.Errorf("at %d: seq %d size %d", at, v>>48, v>>timeBits&sizeMask)
		}
		for _, later := range []int64{0, 20, 2_000_000} {
			if got := sentAt(v, at+later); got != at {
				t.Errorf("sent at %d, read %d us later: %d", at, later, got)
			}
		}
	}
}

// rateSim sends at a rate of its caller's choosing through l whatever the estimate, with
// feedback every 100 ms as sim's receiver gives it: what a forwarder probing the path
// sends (its media and padding).
type rateSim struct {
	t        *testing.T
	e        *Estimator
	l        *link
	rec      *twcc.Recorder
	inFlight []struct {
		seq uint16
		at  int64
	}
	seq       uint16
	now, next int64 // us
}

// run sends rate (bit/s) for d in packets of size bytes and returns the share lost.
func (s *rateSim) run(rate float64, size int, d time.Duration) float64 {
	s.t.Helper()
	if s.rec == nil {
		s.rec = twcc.NewRecorder(1)
	}
	sent, lost := 0, 0
	s.next = max(s.next, s.now)
	for end := s.now + d.Microseconds(); s.now < end; s.now += 1000 {
		for ; s.next <= s.now; s.next += int64(float64(size*8) / rate * 1e6) {
			s.e.Sent(s.seq, size, s.now*1000)
			if at, ok := s.l.pass(s.now, size); ok {
				s.inFlight = append(s.inFlight, struct {
					seq uint16
					at  int64
				}{s.seq, at})
			} else {
				lost++
			}
			sent++
			s.seq++
		}
		for len(s.inFlight) > 0 && s.inFlight[0].at <= s.now {
			s.rec.Record(7, s.inFlight[0].seq, s.inFlight[0].at)
			s.inFlight = s.inFlight[1:]
		}
		if s.now%100_000 == 0 {
			for _, p := range s.rec.BuildFeedbackPacket() {
				b, err := p.Marshal()
				if err != nil {
					s.t.Fatal(err)
				}
				if err := s.e.OnFeedback(b, s.now*1000); err != nil {
					s.t.Fatal(err)
				}
			}
		}
	}
	return float64(lost) / float64(max(sent, 1))
}

// probeQueueStop is the queue (ms) at which the SFU's prober stops (internal/sfu).
const probeQueueStop = 20

// TestEstimatorFollowsProbe: an estimate held low (after a cut, growth capped by what the
// lowest layer sends) rises to what a probe carries through the path without loss or
// queue, within the second or so the received rate is measured over; a probe past the
// path's capacity, stopped once the queue shows (as the SFU's prober stops it), leaves
// the estimate under that capacity and well above the lowest layer.
func TestEstimatorFollowsProbe(t *testing.T) {
	e := New(Config{Initial: 1_500_000})
	s := &rateSim{t: t, e: e, l: &link{rate: 600_000, limit: tbfLimit(600_000)}, now: 1_000_000}
	s.run(1_200_000, 1200, 2*time.Second) // over the cap: cut
	s.run(150_000, 600, 10*time.Second)   // the lowest layer: drained, growth capped
	low := e.Stats()
	if low.Cuts == 0 || low.Target > 400_000 {
		t.Fatalf("after the lowest layer alone for 10 s: %v (want a cut, and growth held under 400 kbit/s)", low)
	}
	loss := s.run(500_000, 300, 1500*time.Millisecond) // a probe that fits
	probed := e.Stats()
	t.Logf("held: %v; probed at 500 kbit/s: %v, loss %.1f%%", low, probed, 100*loss)
	if probed.Target < 450_000 || probed.Cuts != low.Cuts || loss != 0 {
		t.Errorf("a 500 kbit/s probe of a 600 kbit/s path: %v, loss %.3f (want at least 450 kbit/s, no cut)", probed, loss)
	}
	s.run(150_000, 600, 5*time.Second)
	// Past the capacity, stopped once the queue shows.
	start := s.now
	for s.now < start+1_500_000 && e.Stats().QueueMs < probeQueueStop {
		s.run(900_000, 300, 20*time.Millisecond)
	}
	stopped := time.Duration(s.now-start) * time.Microsecond
	loss = s.run(150_000, 600, 3*time.Second)
	over := e.Stats()
	t.Logf("probed at 900 kbit/s, stopped after %v: %v; loss after it %.1f%%", stopped, over, 100*loss)
	if over.Target > 600_000 || over.Target < 300_000 || stopped > time.Second || loss != 0 {
		t.Errorf("a 900 kbit/s probe of a 600 kbit/s path, stopped after %v: %v, loss after %.3f (want the estimate under 600 kbit/s and over 300, nothing lost)", stopped, over, loss)
	}
}

// TestSentRate: what was sent in the last second, whatever feedback has said of it.
func TestSentRate(t *testing.T) {
	e := New(Config{Initial: 1_000_000})
	start := int64(10 * time.Second)
	for i := range 500 { // 2 s of 250 packets a second, 500 bytes each: 1 Mbit/s
		e.Sent(uint16(i), 500, start+int64(i)*int64(4*time.Millisecond))
	}
	now := start + int64(2*time.Second)
	if got := e.SentRate(now); got < 990_000 || got > 1_010_000 {
		t.Errorf("1 Mbit/s sent: SentRate %d", got)
	}
	if got := e.SentRate(now + int64(3*time.Second)); got != 0 {
		t.Errorf("nothing sent for 3 s: SentRate %d", got)
	}
}
