package bwe

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Config sets an estimator's bounds, in bit/s.
type Config struct {
	Initial int // the estimate before any feedback
	Min     int
	Max     int
}

// The rules (draft-ietf-rmcat-gcc-02, sections 5 and 6, with a queueing-delay detector in
// place of its trendline filter):
//   - loss: the share of packets the feedback reports lost, averaged over lossTau; a packet
//     reported missing counts as lost only when no feedback has reported it received
//     within lossGrace (a packet overtaken by a later one is reported missing, then received
//     in the next feedback: Chromium reports it again). Above
//     10% the estimate is cut by half the loss, if the packets sent since the last cut
//     are lost too (over 10% of them, averaged the same way, at least minFresh counted;
//     and at most once per decreaseGap): the loss of packets sent before it is what that
//     cut answered. Under 2% it may grow.
//   - delay: each packet's one-way delay (its arrival on the subscriber's clock minus its
//     send time on ours: an unknown constant plus the path's queueing) less the least
//     such delay of the last baseWindow is the queueing delay; smoothed per feedback.
//     Above overuseDelay the path is queueing what we send: the estimate falls to 0.85
//     times the rate the subscriber received (at most once per decreaseGap). After a cut,
//     only a queue that grows cuts again: the packets sent since the cut queue behind
//     those sent before it, and if the cut was enough, each of them finds less queue than
//     the first (the queue drains, for seconds when it was long: tc's tbf holds latency
//     times the rate plus its burst, 268 ms at 600 kbit/s in the netns test, and at 0.85
//     of the capacity that takes 1.8 s to go). Cutting again on the draining queue took the
//     estimate down a step at every decreaseGap, the received rate falling with the layers
//     chosen: a 600 kbit/s link ended with the video paused. So a queue cuts again only
//     when the packets sent since the last cut find queueRise more than the least any
//     feedback about them showed. An absolute
//     threshold, rather than the draft's adaptive one on the delay's slope, because the
//     estimate's only user is a layer choice that steps by factors of two or more, and
//     because on a loaded host (the subscriber's or ours) scheduling jitter of a few
//     milliseconds is not congestion.
//   - growth: with little loss and no queue (under normalDelay), multiplicative, 8% a
//     second, never above 1.5 times the received rate plus growthHeadroom (a forwarder
//     sends what its layers are, not what the estimate allows: without the cap an idle
//     estimate would climb without bound); and at least the received rate, which the path
//     has just carried with neither loss nor queue (nor any packet reported missing and
//     waiting out its grace). A forwarder that wants more than its layers send learns it
//     so: it probes (sends padding beside the media; the SFU's prober) and the estimate
//     follows what arrived.
const (
	lossTau        = 300 * time.Millisecond
	lossDecrease   = 0.10
	lossIncrease   = 0.02
	decreaseGap    = 300 * time.Millisecond
	baseWindow     = 10 // seconds
	overuseDelay   = 30 * time.Millisecond
	normalDelay    = 10 * time.Millisecond
	delayBackoff   = 0.85
	growthPerSec   = 1.08
	growthHeadroom = 100_000
	minFresh       = 20                    // packets counted since a cut before loss may cut again
	queueRise      = 10 * time.Millisecond // more queue than the first packets after a cut found
	rateWindow     = time.Second           // the received rate is measured over this much arrival time
	minRateSpan    = 200 * time.Millisecond
	// lossGrace is how long a packet reported missing may still be reported received:
	// browsers send transport-wide feedback every 50 to 250 ms, and report a late packet
	// in the next one, later when the browser is short of CPU (300 ms was not always
	// enough for four browsers on two cores; 1 s paused video too late under a sudden
	// 100 kbit/s cap). Packets reach a subscriber out of the order of their transport-wide
	// numbers: each publisher's reader sends its own batch (decision 56).
	lossGrace = 500 * time.Millisecond
	// maxMissing is how many packets reported missing wait out lossGrace at once; beyond,
	// the oldest counts as lost at once.
	maxMissing = 1024
)

// histSize is how many packets sent are remembered for their feedback: at 1 000 packets a
// second (a subscriber receiving 10 Mbit/s), 4 s. 8 bytes each.
const histSize = 4096

// slot is one packet sent, packed in one word so that recording it is one atomic store:
// its sequence number (bits 48-63), a reported flag (47: counted, received or lost), a
// missing flag (46: reported missing, not yet counted), its size in bytes (35-45) and its
// send time in microseconds modulo 2^35 (about 9.5 hours; the feedback about a packet
// comes within seconds, which tells the full time). Written by whoever sends (the down
// tracks, each from its own goroutine), read by whoever reads feedback: no lock.
type slot struct{ v atomic.Uint64 }

const (
	timeBits    = 35
	timeMask    = 1<<timeBits - 1
	sizeMask    = 1<<11 - 1
	missingBit  = 1 << 46
	reportedBit = 1 << 47
)

// missing is a packet reported missing, and when (monotonic ns).
type missing struct {
	seq uint16
	at  int64
}

func packSlot(seq uint16, size int, atUs int64) uint64 {
	return uint64(seq)<<48 | uint64(min(size, sizeMask))<<timeBits | uint64(atUs)&timeMask
}

// slotSize is a slot's packet size in bytes.
func slotSize(v uint64) int { return int(v >> timeBits & sizeMask) }

// sentAt is a slot's send time (us), the latest such time not after nowUs.
func sentAt(v uint64, nowUs int64) int64 {
	return nowUs - int64((uint64(nowUs)-v)&timeMask)
}

// ackSpan is what one feedback packet reported received: its bytes and the arrival
// times (receiver's clock, us) of the first and last.
type ackSpan struct {
	bytes       int
	first, last int64
}

// Estimator is one subscriber connection's estimator. Sent may be called from any number
// of goroutines; OnFeedback from any, one at a time (it locks).
type Estimator struct {
	hist [histSize]slot
	cfg  Config

	mu      sync.Mutex
	rate    float64
	mins    [baseWindow]int64 // least one-way delay (us) of each of the last seconds
	minSec  [baseWindow]int64 // which second (of our clock) each holds, plus one (0: none)
	queue   float64           // smoothed queueing delay, us
	queued  bool              // queue holds a measurement
	acks    [16]ackSpan       // the last feedback packets' spans, a ring
	ackNext int
	loss    float64 // averaged
	lossAt  int64   // when loss was last updated (monotonic ns)
	// Packets reported missing and not yet counted, oldest first: a ring.
	missing            [maxMissing]missing
	missHead, missSize int
	decrease           int64 // the last decrease (monotonic ns)
	// Of the packets sent since the last decrease: how many were counted (received or
	// lost), their loss averaged as loss is (and when it was last updated), and the least
	// mean queue (us) a feedback about them showed (-1: none yet).
	freshSeen    int
	freshLoss    float64
	freshLossAt  int64
	leastQueue   float64
	fLost, fSeen int   // this feedback's fresh packets lost and counted
	nowUs        int64 // OnFeedback's time, for countLost
	increase     int64 // the last growth step (monotonic ns)
	state        string
	cuts         int // decreases so far

	stats atomic.Pointer[Stats]
}

// Stats is the estimator's state, for the room's statistics and debugging.
type Stats struct {
	Target   int     // bit/s
	Received int     // bit/s the subscriber received, by the feedback (0: not yet known)
	Loss     float64 // averaged loss, 0..1
	QueueMs  float64 // smoothed queueing delay
	State    string  // what the last feedback did: start, grow, hold, delay, loss
	Cuts     int     // decreases (delay or loss) so far
}

func (s Stats) String() string {
	return fmt.Sprintf("target %d kbit/s, received %d kbit/s, loss %.1f%%, queue %.1f ms, %s",
		s.Target/1000, s.Received/1000, 100*s.Loss, s.QueueMs, s.State)
}

// New makes an estimator.
func New(cfg Config) *Estimator {
	if cfg.Min <= 0 {
		cfg.Min = 30_000
	}
	if cfg.Max < cfg.Min {
		cfg.Max = 20_000_000
	}
	cfg.Initial = min(max(cfg.Initial, cfg.Min), cfg.Max)
	e := &Estimator{cfg: cfg, rate: float64(cfg.Initial), state: "start", leastQueue: -1}
	e.stats.Store(&Stats{Target: cfg.Initial, State: e.state})
	return e
}

// Sent records a packet sent with transport-wide sequence number seq, size bytes on the
// wire, at monotonic time at (ns).
func (e *Estimator) Sent(seq uint16, size int, at int64) {
	e.hist[seq%histSize].v.Store(packSlot(seq, size, at/1000))
}

// addMissing notes a packet reported missing (with mu held). It returns 1 when the list
// was full and its oldest entry was counted lost to make room, else 0.
func (e *Estimator) addMissing(seq uint16, now int64) int {
	n := 0
	if e.missSize == maxMissing {
		n = e.popMissing()
	}
	e.missing[(e.missHead+e.missSize)%maxMissing] = missing{seq, now}
	e.missSize++
	return n
}

// expireMissing counts as lost the packets reported missing at least lossGrace ago that no
// feedback has reported received since (with mu held), and returns how many.
func (e *Estimator) expireMissing(now int64) int {
	n := 0
	for e.missSize > 0 && now-e.missing[e.missHead].at >= int64(lossGrace) {
		n += e.popMissing()
	}
	return n
}

// popMissing takes the oldest packet off the missing list (with mu held, the list not
// empty) and counts it lost if it still is: 1, else 0.
func (e *Estimator) popMissing() int {
	seq := e.missing[e.missHead].seq
	e.missHead = (e.missHead + 1) % maxMissing
	e.missSize--
	return e.countLost(seq)
}

// countLost marks seq's slot counted, if it is still that packet and still missing: 1 if
// so, else 0 (received meanwhile, or its slot reused).
func (e *Estimator) countLost(seq uint16) int {
	s := &e.hist[seq%histSize]
	v := s.v.Load()
	if uint16(v>>48) != seq || v&missingBit == 0 || v&reportedBit != 0 || !s.v.CompareAndSwap(v, v|reportedBit) {
		return 0
	}
	if e.fresh(v) {
		e.fSeen++
		e.fLost++
	}
	return 1
}

// fresh says whether the packet of slot value v was sent after the last decrease.
func (e *Estimator) fresh(v uint64) bool {
	return e.decrease == 0 || sentAt(v, e.nowUs)*1000 >= e.decrease
}

// SentRate is what was recorded sent (Sent) in the second before now (monotonic ns), in
// bit/s as the estimator counts sizes: the rate a forwarder sends, measured where its
// packets are, whatever of it has been reported yet.
func (e *Estimator) SentRate(now int64) int {
	nowUs := now / 1000
	bytes := 0
	for i := range e.hist {
		v := e.hist[i].v.Load()
		if v == 0 {
			continue
		}
		if at := sentAt(v, nowUs); nowUs-at < time.Second.Microseconds() {
			bytes += slotSize(v)
		}
	}
	return bytes * 8
}

// Target is the current estimate, bit/s.
func (e *Estimator) Target() int { return e.stats.Load().Target }

// Stats is the estimator's state after the last feedback.
func (e *Estimator) Stats() Stats { return *e.stats.Load() }

// OnFeedback reads one transport-wide feedback packet (Feedback reported it as such) that
// arrived at monotonic time now (ns), and updates the estimate.
func (e *Estimator) OnFeedback(pkt []byte, now int64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var lost, total, bytes, nq, nf int
	var qsum, fsum float64
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	sec, nowUs := now/int64(time.Second), now/1000
	e.nowUs, e.fLost, e.fSeen = nowUs, 0, 0
	err := eachStatus(pkt, func(seq uint16, received bool, arrival int64) {
		s := &e.hist[seq%histSize]
		v := s.v.Load()
		if v == 0 || uint16(v>>48) != seq || v&reportedBit != 0 {
			return // not sent by us lately, or counted before
		}
		if !received {
			if v&missingBit == 0 && s.v.CompareAndSwap(v, v|missingBit) {
				n := e.addMissing(seq, now)
				lost += n
				total += n
			}
			return
		}
		if !s.v.CompareAndSwap(v, (v|reportedBit)&^missingBit) {
			return // overwritten meanwhile
		}
		total++
		bytes += slotSize(v)
		first, last = min(first, arrival), max(last, arrival)
		owd := arrival - sentAt(v, nowUs)
		q := float64(owd - e.observeDelay(owd, sec))
		qsum += q
		nq++
		if e.fresh(v) {
			e.fSeen++
			fsum += q
			nf++
		}
	})
	if err != nil {
		return err
	}
	n := e.expireMissing(now)
	lost += n
	total += n
	if total == 0 {
		return nil
	}
	// Loss, averaged over time.
	e.loss = averaged(e.loss, float64(lost)/float64(total), now-e.lossAt, e.lossAt == 0)
	e.lossAt = now
	// Queueing delay, smoothed per feedback.
	if nq > 0 {
		q := qsum / float64(nq)
		if e.queued {
			e.queue = 0.5*e.queue + 0.5*q
		} else {
			e.queue, e.queued = q, true
		}
		e.acks[e.ackNext] = ackSpan{bytes: bytes, first: first, last: last}
		e.ackNext = (e.ackNext + 1) % len(e.acks)
	}
	// The same for the packets sent since the last decrease.
	if e.fSeen > 0 {
		e.freshLoss = averaged(e.freshLoss, float64(e.fLost)/float64(e.fSeen), now-e.freshLossAt, e.freshSeen == 0)
		e.freshSeen += e.fSeen
		e.freshLossAt = now
	}
	freshQueue := -1.0 // the mean queue of this feedback's packets sent since the last decrease
	if nf > 0 {
		freshQueue = fsum / float64(nf)
		if e.leastQueue < 0 || freshQueue < e.leastQueue {
			e.leastQueue = freshQueue
		}
	}
	received := e.receivedRate()
	e.control(now, received, freshQueue)
	e.stats.Store(&Stats{Target: int(e.rate), Received: int(received), Loss: e.loss, QueueMs: e.queue / 1000, State: e.state, Cuts: e.cuts})
	return nil
}

// observeDelay records a one-way delay (us) in the current second's minimum and returns
// the least of the window: the path's delay without a queue, plus the clocks' offset.
func (e *Estimator) observeDelay(owd, sec int64) int64 {
	mark := sec + 1 // minSec's zero: an empty bucket
	i := sec % baseWindow
	if e.minSec[i] != mark || owd < e.mins[i] {
		e.minSec[i], e.mins[i] = mark, owd
	}
	base := owd
	for j := range e.mins {
		if e.minSec[j] != 0 && e.minSec[j] > mark-baseWindow && e.mins[j] < base {
			base = e.mins[j]
		}
	}
	return base
}

// receivedRate is the rate (bit/s) the subscriber received over the last rateWindow of
// arrival time, from the last feedback packets; 0 while that spans less than minRateSpan.
func (e *Estimator) receivedRate() float64 {
	newest := e.acks[(e.ackNext+len(e.acks)-1)%len(e.acks)]
	if newest.bytes == 0 {
		return 0
	}
	from := newest.last - rateWindow.Microseconds()
	bytes, first := 0, newest.last
	for _, a := range e.acks {
		if a.bytes == 0 || a.last < from || a.last > newest.last {
			continue
		}
		bytes += a.bytes
		first = min(first, max(a.first, from))
	}
	span := newest.last - first
	if span < minRateSpan.Microseconds() {
		return 0
	}
	return float64(bytes) * 8 * 1e6 / float64(span)
}

// control applies the rules to the averaged loss and the smoothed queue; freshQueue is
// the mean queue of this feedback's packets sent since the last decrease (-1: none).
func (e *Estimator) control(now int64, received, freshQueue float64) {
	canDecrease := now-e.decrease >= int64(decreaseGap) || e.decrease == 0
	freshLoss := 0.0
	if e.freshSeen >= minFresh {
		freshLoss = e.freshLoss
	}
	queueGrows := e.decrease == 0 ||
		(freshQueue >= 0 && freshQueue > e.leastQueue+float64(queueRise.Microseconds()))
	switch {
	case e.loss > lossDecrease && freshLoss > lossDecrease && canDecrease:
		e.rate *= 1 - 0.5*e.loss
		e.decreased(now, "loss")
	case e.queue > float64(overuseDelay.Microseconds()) && queueGrows && received > 0 && canDecrease:
		e.rate = min(e.rate, delayBackoff*received)
		e.decreased(now, "delay")
	case e.loss < lossIncrease && e.queue < float64(normalDelay.Microseconds()):
		dt := 1.0
		if e.increase != 0 {
			dt = min(float64(now-e.increase)/float64(time.Second), 1)
		}
		grown := e.rate * math.Pow(growthPerSec, dt)
		if received > 0 {
			grown = min(grown, max(e.rate, 1.5*received+growthHeadroom))
		}
		if e.missSize == 0 { // nothing reported missing is waiting out its grace
			grown = max(grown, received)
		}
		e.rate = grown
		e.state = "grow"
	default:
		e.state = "hold"
	}
	e.increase = now
	e.rate = min(max(e.rate, float64(e.cfg.Min)), float64(e.cfg.Max))
}

// averaged is avg moved towards r, the loss of one feedback, by the weight lossTau gives
// the time since the last update (ns); first: there is no average yet, r is it.
func averaged(avg, r float64, since int64, first bool) float64 {
	if first {
		return r
	}
	return avg + (1-math.Exp(-float64(since)/float64(lossTau)))*(r-avg)
}

// decreased starts counting the packets sent from now on afresh.
func (e *Estimator) decreased(now int64, state string) {
	e.decrease, e.state = now, state
	e.cuts++
	e.freshSeen, e.freshLoss, e.leastQueue = 0, 0, -1
}
