package sfu

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bedside/bedside/internal/bwe"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// rtpOverhead is what a forwarded packet carries besides its payload, for the estimator:
// the RTP header with the transport-wide sequence number's extension (20 bytes) and the
// SRTP tag (16 with AES-GCM).
const rtpOverhead = 36

// Queue sizes of a down track's writer. Video: a key frame of a large layer is tens of
// packets and a burst may follow a layer switch; 256 is about a second of the top layer.
// Audio: 50 packets a second; 64 is more than a second.
const (
	videoQueue = 256
	audioQueue = 64
	// audioRetry is how long a reader waits for room in a full audio queue before it drops
	// the packet: audio is small and must not be lost to a momentary stall of the writer,
	// but the reader serves every other subscriber too and may not wait longer.
	audioRetry = 2 * time.Millisecond
)

var epoch = time.Now()

// Periodic work that many goroutines do alike (each participant's layer allocation, each
// room's active speakers) runs in one of tickSlots phases of its period, shared by all
// (untilSlot): their timers fire together, a few wake-ups of an idle server per period
// rather than one for each goroutine, and the work of one wake-up is a slot's share,
// not everyone's at once (which delayed packets behind it: docs/benchmarks.md).
const tickSlots = 8

// nextSlot hands out the slots in turn.
var nextSlot atomic.Uint32

// tickSlot is a new goroutine's phase within period.
func tickSlot(period time.Duration) time.Duration {
	return time.Duration(nextSlot.Add(1)%tickSlots) * (period / tickSlots)
}

// untilSlot is the time until the next instant, since epoch, that is phase past a
// multiple of period.
func untilSlot(period, phase time.Duration) time.Duration {
	return slotAfter(time.Since(epoch), period, phase)
}

// slotAfter is untilSlot at the time now since epoch: in (0, period].
func slotAfter(now, period, phase time.Duration) time.Duration {
	past := (now - phase) % period // in (-period, period)
	if past < 0 {
		past += period
	}
	return period - past
}

// monotime is monotonic nanoseconds since the process started.
func monotime() int64 { return int64(time.Since(epoch)) }

// binding is what a down track writes with, once its sender has started (pion's Bind).
type binding struct {
	ssrc      uint32
	pt        uint8
	clockRate uint32
	twccID    uint8 // the transport-wide sequence number's extension id; 0: not negotiated
	ws        webrtc.TrackLocalWriter
}

// downTrack is one publication as one subscriber receives it: a webrtc.TrackLocal on the
// subscriber's sub connection, with its own writer goroutine and bounded queue. The
// writer rewrites SSRC, payload type, sequence numbers, timestamps and VP8 picture ids,
// so that layer switches, pauses and dropped frames look to the receiver like one steady
// stream.
type downTrack struct {
	up      *upTrack
	sub     *participant
	kind    webrtc.RTPCodecType
	stream  string // msid stream id: the publisher's id (its screen: id + ".screen")
	trackID string // msid track id: the source
	sender  *webrtc.RTPSender
	m       *Metrics

	bind  atomic.Pointer[binding]
	queue chan *packet
	// mu is held while a packet is written: by the writer goroutine, or by a reader
	// writing directly (deliver). pending counts the packets queued and not yet written;
	// while it is not zero, readers queue, so that a reader's packets stay in order.
	mu      sync.Mutex
	pending atomic.Int32
	done    chan struct{}
	ended   chan struct{} // closed when the writer has returned

	// Set by the subscriber's allocator, read by the readers (wants) and the writer.
	target  atomic.Int32 // the layer to forward (-1: paused)
	desired atomic.Int32 // the layer wanted if the publisher sent every layer (dynacast)
	current atomic.Int32 // the layer being forwarded (written by the writer)

	overflow atomic.Bool // a packet was dropped for a full queue: wait for a key frame

	// Owned by the subscriber's goroutine.
	renderW, renderH int  // as the subscriber shows it (video_size); -1 hidden, 0 unknown
	bwPaused         bool // paused for want of bandwidth, as the subscriber was last told
	// lowered: at the last allocation it flowed below the layer it wants, for want of
	// bandwidth (decision 73)
	lowered bool

	// Owned by whoever holds mu: the writer goroutine or a reader in deliver.
	w writerState
}

type writerState struct {
	hdr      rtp.Header
	twccBuf  [2]byte // the transport-wide sequence number's extension payload (hdr points here)
	cur      int32   // layer forwarded, -1 none
	waitKey  bool    // dropping until a key frame of cur
	started  bool
	sent     bool   // a packet was written: lastSeq, lastTS, lastPic, lastTL0, lastWall are set
	segStart uint16 // first upstream sequence number of the current segment
	seqOff   uint16
	tsOff    uint32
	picOff   uint16
	tl0Off   uint8
	lastSeq  uint16
	lastTS   uint32
	lastPic  uint16
	lastTL0  uint8
	lastWall int64
	// sinceGap counts the frames ended whole (up to 2) since a packet was skipped (or since
	// the first); padOK: the last packet written ended a frame, and it and the one before
	// arrived whole, so padding may follow it (the prober's pad).
	sinceGap int
	padOK    bool
	// Counted here and added to the metrics in batches.
	fwdPackets, fwdBytes int
	// For the sender reports: packets and payload bytes written (retransmissions too, as
	// RFC 3550 counts), and the RTP time and monotonic time of the newest frame's first
	// packet written.
	srPackets, srOctets uint32
	srTS                uint32
	srAt                int64
	// fan is the batch of the reader writing through deliver (nil: write at once).
	fan *fanout
	// direct: the subscriber's direct path has taken this stream (writeRTP).
	direct bool
	// sentVideo holds the video packets written last, by their sequence number as sent
	// (modulo nackBuffer), for retransmission on a subscriber's NACK (resend). Each entry
	// holds a reference to the publisher's packet: no copy, and the subscribers of one
	// layer share the packets (pion's NACK responder, used before, copied every packet of
	// every down track, which was most of the server's heap: docs/benchmarks.md).
	sentVideo [nackBuffer]sentPacket
}

// sentPacket is one packet as a down track wrote it: the publisher's packet and what the
// rewriting made of its numbers.
type sentPacket struct {
	p       *packet // nil: empty
	at      int64   // monotime: when it was last written (sent or resent)
	seq     uint16
	ts      uint32
	twcc    uint16 // its transport-wide sequence number
	pic     uint16
	tl0     uint8
	resends uint8 // how many times it was resent
}

func newDownTrack(up *upTrack, sub *participant) *downTrack {
	d := &downTrack{
		up: up, sub: sub, kind: up.kind, stream: up.publisher, trackID: string(up.source), m: up.m,
		done: make(chan struct{}), ended: make(chan struct{}),
	}
	if up.source == SourceScreen {
		d.stream = up.publisher + ".screen"
	}
	size := videoQueue
	if up.kind == webrtc.RTPCodecTypeAudio {
		size = audioQueue
	}
	d.queue = make(chan *packet, size)
	d.w.cur = -1
	d.current.Store(-1)
	// Until the allocator runs: the lowest layer, the one that surely fits (audio and a
	// track without simulcast have only that one).
	d.target.Store(0)
	d.desired.Store(0)
	return d
}

// webrtc.TrackLocal

func (d *downTrack) ID() string                { return d.trackID }
func (d *downTrack) RID() string               { return "" }
func (d *downTrack) StreamID() string          { return d.stream }
func (d *downTrack) Kind() webrtc.RTPCodecType { return d.kind }

// Unbind forgets the binding (and the SSRC the connection's direct path knew it by).
func (d *downTrack) Unbind(ctx webrtc.TrackLocalContext) error {
	d.bind.Store(nil)
	if tx := d.sub.direct.Load(); tx != nil {
		tx.unbindTrack(uint32(ctx.SSRC()), d)
	}
	return nil
}

var errNoCodec = errors.New("sfu: the subscriber accepts no codec of this track")

// Bind picks the subscriber's payload type for the publisher's codec.
func (d *downTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	var twccID uint8
	for _, e := range ctx.HeaderExtensions() {
		if e.URI == sdp.TransportCCURI && e.ID > 0 && e.ID < 15 {
			twccID = uint8(e.ID)
		}
	}
	for _, c := range ctx.CodecParameters() {
		if strings.EqualFold(c.MimeType, d.up.codec.MimeType) {
			d.bind.Store(&binding{ssrc: uint32(ctx.SSRC()), pt: uint8(c.PayloadType), clockRate: c.ClockRate, twccID: twccID, ws: ctx.WriteStream()})
			if tx := d.sub.direct.Load(); tx != nil {
				tx.bindTrack(uint32(ctx.SSRC()), d)
			}
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, errNoCodec
}

// wants reports whether the reader of layer l should queue its packets here: those of the
// layer being forwarded and of the one being switched to.
func (d *downTrack) wants(l int) bool {
	return int32(l) == d.current.Load() || int32(l) == d.target.Load()
}

// deliver forwards p to this subscriber. When nothing is queued and nobody is writing (the
// usual case) the reader writes it itself: no hand-off to the writer goroutine, no
// wake-up, which on a busy server is most of the cost of a forwarded packet. Otherwise
// the packet goes through the queue (enqueue) and the writer, so that a subscriber whose
// writes stall holds up neither the reader nor the other subscribers for longer than one
// write. The caller keeps its reference; deliver takes its own when it queues.
func (d *downTrack) deliver(p *packet, retry *time.Timer, f *fanout) {
	if d.pending.Load() == 0 && d.mu.TryLock() {
		if d.pending.Load() == 0 {
			select {
			case <-d.done:
			default:
				d.w.fan = f // the reader's batch, for this write only
				d.write(p)
				d.w.fan = nil
			}
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
	p.ref()
	d.enqueue(p, retry)
}

// enqueue gives the writer a packet (the caller took a reference for it). The drop policy
// when the queue is full:
//   - video: the packet is dropped and the writer, seeing overflow, drops to the end of the
//     frame and then waits for the next key frame (a frame with a hole cannot be decoded,
//     and neither can what follows it), asking the publisher for one;
//   - audio: the reader retries for audioRetry, then drops the packet (the receiver's loss
//     concealment covers a 20 ms gap; a late packet is no better than a lost one).
func (d *downTrack) enqueue(p *packet, retry *time.Timer) {
	d.pending.Add(1)
	select {
	case d.queue <- p:
		return
	default:
	}
	if d.kind == webrtc.RTPCodecTypeAudio {
		retry.Reset(audioRetry)
		select {
		case d.queue <- p:
			if !retry.Stop() {
				<-retry.C
			}
			return
		case <-retry.C:
		case <-d.done:
			retry.Stop()
		}
	} else {
		d.overflow.Store(true)
	}
	d.pending.Add(-1)
	d.m.dropQueueFull.Inc()
	p.release()
}

// close stops the writer and waits for it. The down track must already be out of its up
// track's list.
func (d *downTrack) close() {
	select {
	case <-d.done:
	default:
		close(d.done)
	}
	<-d.ended
}

// writeLoop is the down track's writer: it owns the rewriting state and writes to the
// subscriber's connection. It ends when close is called.
func (d *downTrack) writeLoop() {
	defer close(d.ended)
	defer func() {
		d.mu.Lock()
		d.flushCounts()
		d.forgetSent()
		d.mu.Unlock()
	}()
	for {
		select {
		case p := <-d.queue:
			d.mu.Lock()
			d.write(p)
			d.pending.Add(-1)
			d.mu.Unlock()
			p.release()
		case <-d.done:
			for {
				select {
				case p := <-d.queue:
					p.release()
				default:
					return
				}
			}
		}
	}
}

// flushCounts adds the writer's counts to the metrics (with mu held, or from the writer's
// own tests).
func (d *downTrack) flushCounts() {
	if d.w.fwdPackets == 0 {
		return
	}
	c := d.m.forwarded(d.kind)
	c.packets.Add(float64(d.w.fwdPackets))
	c.bytes.Add(float64(d.w.fwdBytes))
	d.w.fwdPackets, d.w.fwdBytes = 0, 0
}

// write forwards one packet, or drops it when it is not (or not yet) for this subscriber.
func (d *downTrack) write(p *packet) {
	b := d.bind.Load()
	if b == nil {
		d.m.dropNotBound.Inc()
		return
	}
	w := &d.w
	if d.kind == webrtc.RTPCodecTypeAudio {
		if !w.started {
			d.startSegment(p, b)
		}
		d.send(p, b, p.payload, 0, 0)
		return
	}
	l := int32(p.layer)
	tgt := d.target.Load()
	if d.overflow.Swap(false) && w.cur >= 0 {
		w.waitKey = true // a packet of this frame was lost: the frame and what follows is undecodable
	}
	switch {
	case l != w.cur:
		// Another layer's packet: it becomes the forwarded layer at its next key frame,
		// if it is the target.
		if l != tgt {
			return
		}
		if !p.vp8.keyframe {
			d.up.requestKeyframe(int(l))
			return
		}
		if w.cur >= 0 {
			d.m.layerSwitches.Inc()
		}
		d.startSegment(p, b)
	case w.waitKey:
		if !p.vp8.keyframe {
			d.up.requestKeyframe(int(l))
			return
		}
		d.startSegment(p, b)
	}
	if int16(p.hdr.SequenceNumber-w.segStart) < 0 {
		return // from before this segment (a late retransmission of the old one)
	}
	if d := p.hdr.SequenceNumber - w.segStart; d > 8192 && d < 32768 {
		// Far into the segment: move its start up (to 4096 packets back, older than any
		// useful retransmission), so that the comparison above stays within half the
		// sequence number space.
		w.segStart = p.hdr.SequenceNumber - 4096
	}
	pic := (p.vp8.picID + w.picOff) & p.vp8.picIDMask()
	tl0 := p.vp8.tl0 + w.tl0Off
	payload, sb := rewrittenPayload(p, pic, tl0)
	if sb != nil && d.newer(p) {
		w.lastPic, w.lastTL0 = pic, tl0
	}
	d.send(p, b, payload, pic, tl0)
	putScratch(sb)
	if tgt != w.cur && tgt < 0 && p.hdr.Marker {
		// Paused: stop at the end of this frame.
		w.cur = -1
		d.current.Store(-1)
	}
}

// newer reports whether p is after the last packet written (sequence numbers wrap). The
// first packet written is: before it, there is nothing to compare with (comparing with
// the zero values would take a first sequence number above 32767 for an old one, keep
// lastSeq at 0, and restart the numbering at 1 at the next segment).
func (d *downTrack) newer(p *packet) bool {
	return !d.w.sent || int16(p.hdr.SequenceNumber+d.w.seqOff-d.w.lastSeq) > 0
}

// startSegment begins forwarding at p (a key frame of a video layer, or the first audio
// packet): the offsets are chosen so that sequence numbers, timestamps and picture ids go
// on from the last packet written, with the timestamp advanced by the wall-clock time
// since then.
func (d *downTrack) startSegment(p *packet, b *binding) {
	w := &d.w
	if w.sent {
		w.seqOff = w.lastSeq + 1 - p.hdr.SequenceNumber
		step := uint32(float64(p.arrival-w.lastWall) * float64(b.clockRate) / 1e9)
		w.tsOff = w.lastTS + max(step, 1) - p.hdr.Timestamp
		if p.vp8.hasPicID {
			w.picOff = (w.lastPic + 1 - p.vp8.picID) & p.vp8.picIDMask()
		}
		if p.vp8.hasTL0 {
			w.tl0Off = w.lastTL0 + 1 - p.vp8.tl0
		}
	}
	w.started = true
	w.segStart = p.hdr.SequenceNumber
	w.cur = int32(p.layer)
	w.waitKey = false
	d.current.Store(w.cur)
}

// scratch is a buffer for one rewritten payload. They are pooled rather than one per down
// track: at fanout 100 a buffer per subscriber cycled 150 KB through the cache for every
// incoming packet, where a pooled one stays in it (docs/benchmarks.md).
type scratch [maxPacket]byte

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// rewrittenPayload is what p carries to a subscriber: its payload, or, where its VP8
// descriptor has a picture id or TL0PICIDX, a copy holding pic and tl0 in a pooled buffer,
// which the caller gives back with putScratch once written (nil: nothing to give back).
func rewrittenPayload(p *packet, pic uint16, tl0 uint8) ([]byte, *scratch) {
	if !p.vp8.hasPicID && !p.vp8.hasTL0 {
		return p.payload, nil
	}
	sb := scratchPool.Get().(*scratch)
	n := copy(sb[:], p.payload)
	rewriteVP8(sb[:n], &p.vp8, pic, tl0)
	return sb[:n], sb
}

func putScratch(sb *scratch) {
	if sb != nil {
		scratchPool.Put(sb)
	}
}

// send writes p with the rewritten header (and payload: pic and tl0 are what it holds),
// and keeps a video packet for retransmission.
func (d *downTrack) send(p *packet, b *binding, payload []byte, pic uint16, tl0 uint8) {
	w := &d.w
	seq := p.hdr.SequenceNumber + w.seqOff
	ts := p.hdr.Timestamp + w.tsOff
	if d.newer(p) {
		if w.sent && seq != w.lastSeq+1 {
			w.sinceGap = -1 // a packet skipped (lost on the way in, or late): this frame is not whole
		}
		if p.hdr.Marker {
			w.sinceGap = min(w.sinceGap+1, 2)
		}
		w.padOK = p.hdr.Marker && w.sinceGap == 2
		w.lastSeq, w.lastTS, w.lastWall = seq, ts, p.arrival
		w.sent = true
	}
	// A transport-wide number only for a packet that carries it: a number taken and not
	// sent would look to the subscriber's feedback, and so to the estimator, like a loss.
	var twcc uint16
	if b.twccID != 0 {
		twcc = uint16(d.sub.twccSeq.Add(1))
	}
	at, err := d.writeRTP(b, d.header(b, seq, ts, twcc, p.hdr.Marker), payload)
	if err != nil {
		d.m.dropWriteError.Inc()
		return
	}
	if b.twccID != 0 {
		d.sub.est.Sent(twcc, len(payload)+rtpOverhead, at)
	}
	if d.kind == webrtc.RTPCodecTypeVideo {
		e := &w.sentVideo[seq%nackBuffer]
		if e.p != nil {
			e.p.release()
		}
		p.ref()
		*e = sentPacket{p: p, at: at, seq: seq, ts: ts, twcc: twcc, pic: pic, tl0: tl0}
	}
	w.fwdPackets++
	w.fwdBytes += len(payload)
	if w.fwdPackets >= 64 {
		d.flushCounts()
	}
}

// writeRTP writes one packet (with mu held): by the subscriber's direct send path when it
// takes the stream, which is the usual case, else down pion's chain (its SRTP session;
// the direct path's interceptor under it). The direct path is called here rather than
// from the bottom of pion's chain to spare each packet the chain's calls (decision 54).
// Either way it is counted for the sender reports. at is when it was written (monotime),
// taken before the write: the estimator takes each packet's one-way delay against this
// time, and the least delay of 10 s for the path's (decision 74). Taken after a write
// that held the goroutine (a system call, then a wait for a processor on a busy host),
// it was late by milliseconds: that packet's delay read too short, became the least, and
// every other packet read as queued by as much for the next 10 s.
func (d *downTrack) writeRTP(b *binding, h *rtp.Header, payload []byte) (at int64, err error) {
	tx := d.sub.direct.Load()
	direct := false
	if tx != nil {
		// Once the path has taken the stream it keeps it (only a stream that never went
		// by it can have gone through pion's SRTP): after the first packet, ready alone
		// decides, which spares every packet a look into the path's set of such streams
		// (two dependent loads that missed the cache, 6% of the server's CPU at fanout 100).
		if d.w.direct {
			direct = tx.ready()
		} else {
			direct = tx.takes(b.ssrc)
			d.w.direct = direct
		}
	}
	at = monotime()
	if direct {
		_, err = tx.write(h, payload, d.w.fan)
	} else {
		_, err = b.ws.WriteRTP(h, payload)
	}
	if err != nil {
		return 0, err
	}
	w := &d.w
	// The sender reports' clock is anchored at the first packet of each newer frame: not
	// at a retransmission (an older time), nor at the frame's later packets, nor at a
	// probe's padding, which carries the last frame's time long after it (for a paused
	// video, seconds to minutes: the reports then put its frames that much later against
	// the audio's, and the subscriber's lip sync held the audio back by a second and more
	// once the video was back).
	if w.srPackets == 0 || int32(h.Timestamp-w.srTS) > 0 {
		w.srTS, w.srAt = h.Timestamp, at
	}
	w.srPackets++
	w.srOctets += uint32(len(payload))
	return at, nil
}

// senderReport is the down track's RTCP sender report at wall-clock time now and
// monotonic time mono: the RTP time of the newest frame written, moved on by the time
// since its first packet was written (writeRTP), against now's NTP time, and the packets
// and payload bytes written (RFC 3550, 6.4.1). The receiver aligns audio and video by
// it. ok is false before the first packet. It takes mu: the writer's state is the
// writer's.
func (d *downTrack) senderReport(now time.Time, mono int64) (sr rtcp.SenderReport, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.bind.Load()
	if b == nil || d.w.srPackets == 0 {
		return sr, false
	}
	step := uint32((mono - d.w.srAt) * int64(b.clockRate) / int64(time.Second))
	return rtcp.SenderReport{
		SSRC: b.ssrc, NTPTime: ntpTime(now), RTPTime: d.w.srTS + step,
		PacketCount: d.w.srPackets, OctetCount: d.w.srOctets,
	}, true
}

// ntpTime is t in NTP's 64-bit fixed point (seconds since 1900, then the fraction).
func ntpTime(t time.Time) uint64 {
	const unixToNTP = 2_208_988_800
	ns := t.UnixNano()
	sec := uint64(ns/int64(time.Second)) + unixToNTP
	frac := (uint64(ns%int64(time.Second)) << 32) / uint64(time.Second)
	return sec<<32 | frac
}

// header is the writer's RTP header, filled for a packet to the subscriber. The only
// extension is the transport-wide sequence number, where negotiated: a retransmission
// gives the original's, so that it is the same packet to the byte (SRTP with AES-GCM
// takes its nonce from SSRC, rollover counter and sequence number: the same nonce over a
// different header would weaken the authentication).
func (d *downTrack) header(b *binding, seq uint16, ts uint32, twcc uint16, marker bool) *rtp.Header {
	h := &d.w.hdr
	h.Version = 2
	h.Padding = false
	h.Marker = marker
	h.PayloadType = b.pt
	h.SequenceNumber = seq
	h.Timestamp = ts
	h.SSRC = b.ssrc
	h.CSRC = nil
	h.Extension = false
	h.ExtensionProfile = 0
	h.Extensions = h.Extensions[:0]
	h.PaddingSize = 0
	if b.twccID != 0 {
		binary.BigEndian.PutUint16(d.w.twccBuf[:], twcc)
		h.SetExtension(b.twccID, d.w.twccBuf[:]) // one-byte profile; reuses Extensions' array
	}
	return h
}

// resend answers a subscriber's NACK: each packet asked for that is still kept is written
// again as it was first sent (same sequence number, timestamp and payload; the subscriber
// offers no RTX). A packet no longer kept is not: by then it is of no use to the
// receiver's jitter buffer. Nor, by the rules of design decision 69, is a packet of a
// video paused now (its next frame is a key frame), one resent less than resendGap ago
// or maxResends times already, or one past the subscriber's retransmission budget
// (resendBudget): a subscriber asks again for what a narrowed link keeps losing, and
// answering every asking filled such a link with old video, the audio lost behind it,
// for as long as the browser went on asking (12 s under a 100 kbit/s cap). It takes the
// writer's lock, so it never interleaves with a write; readers meanwhile queue their
// packets for the writer.
func (d *downTrack) resend(nacks []rtcp.NackPair) {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.done:
		return
	default:
	}
	b := d.bind.Load()
	if b == nil {
		return
	}
	paused := d.target.Load() < 0
	now := monotime()
	for _, pair := range nacks {
		for _, seq := range pair.PacketList() {
			e := &d.w.sentVideo[seq%nackBuffer]
			switch {
			case e.p == nil || e.seq != seq:
				d.m.nackMissed.Inc()
				continue
			case paused:
				d.m.nackRefused[refusedPaused].Inc()
				continue
			case e.resends >= maxResends || e.resends > 0 && now-e.at < int64(resendGap):
				d.m.nackRefused[refusedRepeat].Inc()
				continue
			case !d.sub.resends.take(now, len(e.p.payload)+rtpOverhead, d.sub.resendRate()):
				d.m.nackRefused[refusedBudget].Inc()
				continue
			}
			payload, sb := rewrittenPayload(e.p, e.pic, e.tl0)
			at, err := d.writeRTP(b, d.header(b, e.seq, e.ts, e.twcc, e.p.hdr.Marker), payload)
			putScratch(sb)
			if err != nil {
				d.m.dropWriteError.Inc()
				return
			}
			e.at, e.resends = at, e.resends+1
			d.m.retransmitted.Inc()
		}
	}
}

// ours reports whether a feedback message is about this track (a compound RTCP packet
// may speak of the subscriber's other tracks too).
func (d *downTrack) ours(ssrc uint32) bool {
	b := d.bind.Load()
	return b != nil && b.ssrc == ssrc
}

// forgetSent lets go of the packets kept for retransmission (with mu held, once the
// writer has stopped).
func (d *downTrack) forgetSent() {
	for i := range d.w.sentVideo {
		if e := &d.w.sentVideo[i]; e.p != nil {
			e.p.release()
			*e = sentPacket{}
		}
	}
}

// readRTCP reads what pion's path gives of the subscriber's RTCP about this track: all of
// it when the connection has no direct path, else what that path did not take (decision
// 55: another address, or before the path was up). pion hands a compound packet to the
// reader of every track it names; each reader acts on the messages about its own.
func (d *downTrack) readRTCP() {
	buf := make([]byte, 1500)
	var raw []rtcp.RawPacket // the packets of a compound packet, in buf
	self := func(ssrc uint32) *downTrack {
		if d.ours(ssrc) {
			return d
		}
		return nil
	}
	for {
		n, _, err := d.sender.Read(buf)
		if err != nil {
			return
		}
		if tx := d.sub.direct.Load(); tx != nil {
			tx.rtcpPion.Add(1)
		}
		if raw, err = rtcp.AppendRawPackets(raw[:0], buf[:n]); err != nil {
			continue
		}
		for _, pkt := range raw {
			handleRTCP(pkt, self, d.m)
		}
	}
}

// handleRTCP acts on one RTCP packet from a subscriber, on either path: transport-wide
// feedback goes to the subscriber's estimator, a NACK is answered from the track's cache,
// a picture loss or FIR asks the publisher for a key frame (rate-limited), a REMB is kept
// as the subscriber's estimate where it has no feedback. find gives the down track a
// message is about (nil: none of the caller's).
func handleRTCP(pkt []byte, find func(ssrc uint32) *downTrack, m *Metrics) {
	if ssrc, ok := bwe.Feedback(pkt); ok {
		if d := find(ssrc); d != nil {
			if err := d.sub.est.OnFeedback(pkt, monotime()); err != nil {
				m.feedbackInvalid.Inc()
			}
		}
		return
	}
	if len(pkt) < 2 || (pkt[1] != uint8(rtcp.TypeTransportSpecificFeedback) && pkt[1] != uint8(rtcp.TypePayloadSpecificFeedback)) {
		return // receiver reports, descriptions, byes: nothing to act on
	}
	msgs, err := rtcp.Unmarshal(pkt)
	if err != nil {
		return
	}
	for _, msg := range msgs {
		switch x := msg.(type) {
		case *rtcp.PictureLossIndication:
			if d := find(x.MediaSSRC); d != nil {
				d.up.requestKeyframe(int(d.current.Load()))
			}
		case *rtcp.FullIntraRequest:
			for _, e := range x.FIR {
				if d := find(e.SSRC); d != nil {
					d.up.requestKeyframe(int(d.current.Load()))
				}
			}
		case *rtcp.ReceiverEstimatedMaximumBitrate:
			for _, ssrc := range x.SSRCs {
				if d := find(ssrc); d != nil {
					d.sub.remb.Store(int64(x.Bitrate))
					break
				}
			}
		case *rtcp.TransportLayerNack:
			if d := find(x.MediaSSRC); d != nil && d.kind == webrtc.RTPCodecTypeVideo {
				d.resend(x.Nacks)
			}
		}
	}
}
