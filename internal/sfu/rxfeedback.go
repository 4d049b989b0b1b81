package sfu

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
)

// The publishers' receive side (design decision 64). A publisher's browser needs three
// kinds of feedback from the SFU about what it receives: transport-wide congestion control
// feedback (its bandwidth estimate, and so which simulcast layers it sends, rests on it),
// NACKs for lost video packets, and receiver reports (loss, jitter, round-trip time). pion's
// interceptors for them read every packet through the track reader's chain, each parsing
// the header again into an attributes map, and the transport-wide one hands every packet
// to a goroutine of its own through a channel; each has its own ticker goroutine per
// connection: 12-17% of the server's CPU per forwarded packet in rooms of 4
// (docs/benchmarks.md).
// Here one mutex-guarded record per pub connection is updated where the packet is put in
// its stream's queue (by the socket reader, or by the pump for what came through pion),
// reading the few bytes it needs in place; the participant's goroutine sends the feedback
// in one of the shared slots (decision 60), all kinds together in as few RTCP packets as
// fit.

// Feedback timing: transport-wide feedback every feedbackEvery (pion's interval; Chrome's
// own receive side sends it every 50-250 ms), NACKs with it, receiver reports every
// reportEveryFeedback of those (one a second, as pion's).
const (
	feedbackEvery       = 100 * time.Millisecond
	reportEveryFeedback = 10
)

// nackLog is how many sequence numbers a stream's receive log covers (pion's generator
// kept 512); nackTries how many times a missing packet is asked for (one a feedback tick:
// a second, about as long as a browser keeps packets to send again).
const (
	nackLog   = 512
	nackTries = 10
)

// A publisher is asked to send again at most a share of what arrived from it (decision
// 75): a token bucket per pub connection, filled each feedback tick by nackShare of the
// bytes that arrived since the last one, holding at most nackShare of what arrived in the
// last nackSavedTicks ticks (half a second) and never less than one packet's worth (which
// it starts with). Each asking costs the stream's mean packet size; a missing packet that
// does not fit is given up. A publisher whose link is congested loses many packets at
// once, and asking for all of them (each up to nackTries times) made its browser send
// them again into the same link, crowding out its audio for seconds after its video had
// stopped.
const (
	nackShare      = 0.25
	nackSavedTicks = 5
	nackMinSaved   = 1200
)

// rtcpBudget is the most RTCP one write of feedback carries: as many packets as fit are
// sent together (one SRTCP packet, one datagram).
const rtcpBudget = 1200

// rxFeedback is what a pub connection's receive side knows of the packets that arrived.
type rxFeedback struct {
	mu      sync.Mutex
	ssrc    uint32 // ours, as the sender of the feedback
	rec     *twcc.Recorder
	streams map[uint32]*rxStats
	ticks   int
	nacks   []uint16 // scratch of build
	m       *Metrics

	// The asking budget (decision 75): bytes arrived since the last tick, those of the
	// last nackSavedTicks ticks, and what may be asked for now, in bytes.
	tickBytes   int64
	arrivedLast [nackSavedTicks]int64
	nackBudget  float64
}

func newRxFeedback(m *Metrics) *rxFeedback {
	ssrc := rand.Uint32()
	return &rxFeedback{ssrc: ssrc, rec: twcc.NewRecorder(ssrc), streams: map[uint32]*rxStats{}, m: m, nackBudget: nackMinSaved}
}

// rxStats is one incoming stream's receive statistics (RFC 3550 A.3, A.8) and its log of
// sequence numbers for NACKs.
type rxStats struct {
	ssrc      uint32
	twccID    uint8 // the transport-wide sequence number's extension id; 0: not negotiated
	nack      bool  // negotiated for this stream's codec
	clockRate float64

	started  bool
	cycles   uint32  // sequence number wrap-arounds, shifted: the top 16 bits of max
	max      uint16  // the highest sequence number
	base     uint32  // the first extended sequence number
	received uint32  // packets received (late ones too; duplicates not)
	bytes    int64   // and their bytes, for the mean size an asking costs (decision 75)
	lastAt   int64   // monotime of the last packet in order
	lastTS   uint32  // and its RTP timestamp
	jitter   float64 // in clock units

	priorExpected, priorReceived uint32 // at the last report

	lastSR   uint32 // the middle 32 bits of the last sender report's NTP time
	lastSRAt int64  // monotime when it arrived; 0: none yet

	// The receive log: a bit per sequence number of the last nackLog, and how often each
	// missing one was asked for. Every number up to consecutive arrived or was given up.
	log         [nackLog / 64]uint64
	tries       [nackLog]uint8
	consecutive uint16
}

// bind starts the statistics of a stream, with what pion negotiated for it; the stream's
// queue keeps them, for arrived.
func (f *rxFeedback) bind(info *interceptor.StreamInfo) *rxStats {
	st := &rxStats{ssrc: info.SSRC, clockRate: float64(info.ClockRate)}
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == sdp.TransportCCURI && e.ID > 0 && e.ID < 256 {
			st.twccID = uint8(e.ID)
		}
	}
	for _, fb := range info.RTCPFeedback {
		if fb.Type == "nack" && fb.Parameter == "" {
			st.nack = true
		}
	}
	if st.clockRate == 0 {
		st.clockRate = 90000
	}
	f.mu.Lock()
	f.streams[info.SSRC] = st
	f.mu.Unlock()
	return st
}

func (f *rxFeedback) unbind(ssrc uint32) {
	f.mu.Lock()
	delete(f.streams, ssrc)
	f.mu.Unlock()
}

// arrived records a decrypted RTP packet b of the stream st (bind's), read at now
// (monotime). The caller found the stream by the packet's SSRC already.
func (f *rxFeedback) arrived(st *rxStats, b []byte, now int64) {
	if len(b) < 12 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if st.twccID != 0 {
		if ext := rtpExtension(b, st.twccID); len(ext) >= 2 {
			f.rec.Record(st.ssrc, binary.BigEndian.Uint16(ext), now/1000)
		}
	}
	f.tickBytes += int64(len(b))
	before := st.received
	st.arrived(binary.BigEndian.Uint16(b[2:4]), binary.BigEndian.Uint32(b[4:8]), now)
	if st.received != before {
		st.bytes += int64(len(b))
	}
}

func (st *rxStats) has(seq uint16) bool {
	i := seq % nackLog
	return st.log[i/64]&(1<<(i%64)) != 0
}

func (st *rxStats) mark(seq uint16, got bool) {
	i := seq % nackLog
	if got {
		st.log[i/64] |= 1 << (i % 64)
	} else {
		st.log[i/64] &^= 1 << (i % 64)
		st.tries[i] = 0
	}
}

func (st *rxStats) arrived(seq uint16, ts uint32, now int64) {
	if !st.started {
		st.started = true
		st.max, st.base, st.consecutive = seq, uint32(seq), seq
		st.mark(seq, true)
		st.received = 1
		st.lastAt, st.lastTS = now, ts
		return
	}
	switch d := seq - st.max; {
	case d == 0:
		return // a duplicate
	case d < 0x8000: // ahead of the highest
		if d > nackLog {
			// A gap longer than the log: nothing in it is worth asking for any more.
			clear(st.log[:])
			clear(st.tries[:])
			st.consecutive = seq - 1
		} else {
			for i := st.max + 1; i != seq; i++ {
				st.mark(i, false)
			}
			if seq-st.consecutive > nackLog-1 {
				st.consecutive = seq - (nackLog - 1) // what is older is out of the log
			}
		}
		if seq < st.max {
			st.cycles += 1 << 16
		}
		st.max = seq
		st.mark(seq, true)
		// Interarrival jitter (RFC 3550 A.8), of packets in order only: one sent again on
		// a NACK is late by design. The difference of the transit times, in the clock's
		// units, from differences (the timestamps' modulo 2^32: they wrap around).
		d := float64(now-st.lastAt)*st.clockRate/1e9 - float64(int32(ts-st.lastTS))
		st.lastAt, st.lastTS = now, ts
		if d < 0 {
			d = -d
		}
		st.jitter += (d - st.jitter) / 16
	case st.max-seq < nackLog: // behind it, in the log: late, or sent again on a NACK
		if st.has(seq) {
			return // a duplicate
		}
		st.mark(seq, true)
	default:
		// Older than the log: counted as received, not logged.
	}
	for st.consecutive != st.max && st.has(st.consecutive+1) {
		st.consecutive++
	}
	st.received++
}

// senderReport notes a publisher's sender report, for the round-trip time its browser
// works out from our receiver reports.
func (f *rxFeedback) senderReport(sr *rtcp.SenderReport, now int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := f.streams[sr.SSRC]; st != nil {
		st.lastSR, st.lastSRAt = uint32(sr.NTPTime>>16), now
	}
}

// missing appends the sequence numbers to ask for again (each at most nackTries times),
// in order, while *budget holds the stream's mean packet size for each, and moves the
// consecutive mark past those given up. The newest come first to the budget: by the time
// it has room again, an older packet is of the least use. It returns how many missing
// packets did not fit and were given up.
func (st *rxStats) missing(out []uint16, budget *float64) ([]uint16, int) {
	if !st.started || !st.nack || st.consecutive == st.max {
		return out, 0
	}
	cost := float64(st.bytes) / float64(max(st.received, 1))
	start, skipped := len(out), 0
	for i := st.max - 1; i != st.consecutive; i-- {
		if st.has(i) {
			continue
		}
		t := &st.tries[i%nackLog]
		if *t >= nackTries {
			continue
		}
		if *budget < cost {
			*t = nackTries
			skipped++
			continue
		}
		*budget -= cost
		*t++
		out = append(out, i)
	}
	slices.Reverse(out[start:])
	for st.consecutive != st.max && (st.has(st.consecutive+1) || st.tries[(st.consecutive+1)%nackLog] >= nackTries) {
		st.consecutive++
	}
	return out, skipped
}

// report is the stream's reception report since the last one (RFC 3550 6.4.1, A.3).
func (st *rxStats) report(now int64) rtcp.ReceptionReport {
	ext := st.cycles | uint32(st.max)
	expected := ext - st.base + 1
	lost := int64(expected) - int64(st.received)
	lost = min(max(lost, 0), 0x7fffff)
	expInt, recInt := expected-st.priorExpected, st.received-st.priorReceived
	st.priorExpected, st.priorReceived = expected, st.received
	var fraction uint8
	if expInt > 0 && expInt > recInt {
		fraction = uint8(min((uint64(expInt-recInt)<<8)/uint64(expInt), 255))
	}
	r := rtcp.ReceptionReport{
		SSRC:               st.ssrc,
		FractionLost:       fraction,
		TotalLost:          uint32(lost),
		LastSequenceNumber: ext,
		Jitter:             uint32(st.jitter),
		LastSenderReport:   st.lastSR,
	}
	if st.lastSRAt != 0 {
		// In 1/65536 s. A sender report read after the tick took its time (now) is not
		// yet a moment old: 0, not a negative delay wrapped to a day.
		r.Delay = uint32(max(now-st.lastSRAt, 0) * 65536 / 1e9)
	}
	return r
}

// build is one feedback tick's RTCP: a receiver report of every stream heard from (every
// reportEveryFeedback ticks) first, then the transport-wide feedback, then NACKs.
func (f *rxFeedback) build(now int64) []rtcp.Packet {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []rtcp.Packet
	if f.ticks++; f.ticks%reportEveryFeedback == 0 {
		rr := &rtcp.ReceiverReport{SSRC: f.ssrc}
		for _, st := range f.streams {
			if st.started && len(rr.Reports) < 31 {
				rr.Reports = append(rr.Reports, st.report(now))
			}
		}
		if len(rr.Reports) > 0 {
			out = append(out, rr)
		}
	}
	out = append(out, f.rec.BuildFeedbackPacket()...)
	f.arrivedLast[f.ticks%nackSavedTicks] = f.tickBytes
	var saved int64
	for _, b := range f.arrivedLast {
		saved += b
	}
	f.nackBudget = min(f.nackBudget+float64(f.tickBytes)*nackShare, max(float64(saved)*nackShare, nackMinSaved))
	f.tickBytes = 0
	for _, st := range f.streams {
		var skipped int
		f.nacks, skipped = st.missing(f.nacks[:0], &f.nackBudget)
		if skipped > 0 {
			f.m.nacksSkipped.Add(float64(skipped))
		}
		if len(f.nacks) > 0 {
			f.m.nacksSent.Add(float64(len(f.nacks)))
			out = append(out, &rtcp.TransportLayerNack{SenderSSRC: f.ssrc, MediaSSRC: st.ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers(f.nacks)})
		}
	}
	return out
}

// sendFeedback writes pkts with write, as many together as fit in rtcpBudget bytes.
func sendFeedback(pkts []rtcp.Packet, write func([]rtcp.Packet) error) error {
	for len(pkts) > 0 {
		n, size := 1, pkts[0].MarshalSize()
		for n < len(pkts) && size+pkts[n].MarshalSize() <= rtcpBudget {
			size += pkts[n].MarshalSize()
			n++
		}
		if err := write(pkts[:n]); err != nil {
			return err
		}
		pkts = pkts[n:]
	}
	return nil
}

// rtpExtension returns the payload of header extension id in RTP packet b (one-byte or
// two-byte form, RFC 8285), read in place; nil if it has none or b is malformed.
func rtpExtension(b []byte, id uint8) []byte {
	if len(b) < 12 || b[0]&0x10 == 0 {
		return nil
	}
	off := 12 + 4*int(b[0]&0x0f)
	if len(b) < off+4 {
		return nil
	}
	profile := binary.BigEndian.Uint16(b[off:])
	end := off + 4 + 4*int(binary.BigEndian.Uint16(b[off+2:]))
	if len(b) < end {
		return nil
	}
	off += 4
	switch {
	case profile == 0xbede:
		for off < end {
			if b[off] == 0 { // padding
				off++
				continue
			}
			eid, l := b[off]>>4, int(b[off]&0x0f)+1
			if eid == 0 || eid == 15 { // the rest is not to be read
				return nil
			}
			if off+1+l > end {
				return nil
			}
			if eid == id {
				return b[off+1 : off+1+l]
			}
			off += 1 + l
		}
	case profile == 0x1000: // appbits 0, as pion reads it
		for off < end {
			eid := b[off]
			if eid == 0 { // padding
				off++
				continue
			}
			if off+2 > end {
				return nil
			}
			l := int(b[off+1])
			if off+2+l > end {
				return nil
			}
			if eid == id {
				return b[off+2 : off+2+l]
			}
			off += 2 + l
		}
	}
	return nil
}
