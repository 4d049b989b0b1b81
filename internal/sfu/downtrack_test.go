package sfu

import (
	"bytes"
	"fmt"
	"github.com/bedside/bedside/internal/bwe"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// fakeWriter records what a down track writes.
type fakeWriter struct{ out []sent }

type sent struct {
	hdr     rtp.Header
	payload []byte
}

func (f *fakeWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	f.out = append(f.out, sent{hdr: h.Clone(), payload: append([]byte(nil), payload...)}) // Clone: the extensions point into the writer's buffer
	return len(payload), nil
}

func (f *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }

// testTrack is a video publication with three layers and one bound down track.
func testTrack(t *testing.T, kind webrtc.RTPCodecType) (*upTrack, *downTrack, *fakeWriter) {
	t.Helper()
	m := NewMetrics(nil)
	up := &upTrack{publisher: "prt_pub", source: SourceCamera, kind: kind, simulcast: kind == webrtc.RTPCodecTypeVideo, m: m}
	up.downs.Store(&[]*downTrack{})
	d := newDownTrack(up, testSubscriber())
	fw := &fakeWriter{}
	clock := uint32(90000)
	if kind == webrtc.RTPCodecTypeAudio {
		clock = 48000
	}
	d.bind.Store(&binding{ssrc: 0xdecaf, pt: 98, clockRate: clock, ws: fw})
	return up, d, fw
}

// withTWCC gives d's binding the transport-wide sequence number extension (id 5), which
// padding and the estimator's accounting need.
func withTWCC(d *downTrack) {
	b := *d.bind.Load()
	b.twccID = 5
	d.bind.Store(&b)
}

// frames makes the RTP packets of a layer's frames: each frame is packets packets, the
// first of a key frame every keyEvery frames (0: only the first). Sequence numbers,
// timestamps and picture ids start at the given values (each layer has its own, as a
// browser's simulcast encodings do). fill makes the opaque frame bytes.
type frameGen struct {
	layer    int8
	seq      uint16
	ts       uint32
	pic      uint16
	tl0      uint8
	packets  int
	keyEvery int
	n        int
	fill     func(b []byte)
	wall     int64
}

func (g *frameGen) frame() []*packet {
	key := g.n == 0 || (g.keyEvery > 0 && g.n%g.keyEvery == 0)
	var out []*packet
	for i := range g.packets {
		body := make([]byte, 40)
		g.fill(body)
		payload := vp8Payload(i == 0, key, g.pic, g.tl0, 640>>(2-g.layer), 360>>(2-g.layer), body)
		p := getPacket()
		n := copy(p.buf[12:], payload)
		p.hdr = rtp.Header{Version: 2, SequenceNumber: g.seq, Timestamp: g.ts, SSRC: 1000 + uint32(g.layer), Marker: i == g.packets-1, PayloadType: 96}
		p.payload = p.buf[12 : 12+n]
		p.vp8, _ = parseVP8(p.payload)
		p.layer = g.layer
		p.arrival = g.wall
		out = append(out, p)
		g.seq++
	}
	g.n++
	g.ts += 3000
	g.pic = (g.pic + 1) & 0x7fff
	if key {
		g.tl0++
	}
	g.wall += int64(33 * time.Millisecond)
	return out
}

func zeros(b []byte) { clear(b) }

// writeFrames writes the packets of g's next n frames to d, as a layer's reader would.
func writeFrames(d *downTrack, g *frameGen, n int) {
	for range n {
		for _, p := range g.frame() {
			d.write(p)
			p.release()
		}
	}
}

func random(r *rand.Rand) func([]byte) {
	return func(b []byte) {
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
	}
}

// TestSeqTimestampContinuity: across a layer switch the subscriber sees one stream:
// sequence numbers and picture ids go on by one, the timestamp moves forward, the switch
// happens at a key frame of the new layer, and the key frame is asked for. Whatever the
// first layer's first sequence number, timestamp and picture id: browsers start sequence
// numbers anywhere up to 32767 and timestamps anywhere, other stacks anywhere at all, and
// a subscriber may start receiving when the publisher's numbers are anywhere.
func TestSeqTimestampContinuity(t *testing.T) {
	for _, tc := range []struct {
		name string
		seq  uint16
		ts   uint32
		pic  uint16
	}{
		{"low", 100, 5000, 7000},
		{"above half", 40000, 3_000_000_000, 20000},
		{"wrapping", 65534, 0xffff_fff0, 32766},
	} {
		t.Run(tc.name, func(t *testing.T) { testSeqTimestampContinuity(t, tc.seq, tc.ts, tc.pic) })
	}
}

func testSeqTimestampContinuity(t *testing.T, seq uint16, ts uint32, pic uint16) {
	up, d, fw := testTrack(t, webrtc.RTPCodecTypeVideo)
	q := &frameGen{layer: 0, seq: seq, ts: ts, pic: pic, packets: 1, keyEvery: 10, fill: zeros}
	f := &frameGen{layer: 2, seq: 40000, ts: 9_000_000, pic: 32760, packets: 3, keyEvery: 10, fill: zeros}
	write := func(ps []*packet) {
		for _, p := range ps {
			d.write(p)
		}
	}
	// Layer q from its key frame.
	for range 3 {
		write(q.frame())
		f.frame()
	}
	if len(fw.out) != 3 || d.w.cur != 0 {
		t.Fatalf("on q: %d packets, layer %d", len(fw.out), d.w.cur)
	}
	// Switch to f: its delta frames are not taken, a key frame is asked for; q goes on.
	d.target.Store(2)
	for range 7 { // f's frames 3 to 9
		write(f.frame())
		write(q.frame())
	}
	if d.w.cur != 0 || up.layers[2].lastKey.Load() == 0 {
		t.Fatalf("switched before a key frame, or no key frame asked: layer %d", d.w.cur)
	}
	before := len(fw.out)
	write(f.frame()) // frame 10 of f: a key frame
	write(q.frame()) // q is no longer forwarded
	for range 3 {
		write(f.frame())
	}
	if d.w.cur != 2 || len(fw.out) != before+3+9 {
		t.Fatalf("after f's key frame: layer %d, %d new packets", d.w.cur, len(fw.out)-before)
	}
	for i := 1; i < len(fw.out); i++ {
		a, b := fw.out[i-1], fw.out[i]
		if b.hdr.SequenceNumber != a.hdr.SequenceNumber+1 {
			t.Errorf("packet %d: sequence %d after %d", i, b.hdr.SequenceNumber, a.hdr.SequenceNumber)
		}
		if int32(b.hdr.Timestamp-a.hdr.Timestamp) < 0 {
			t.Errorf("packet %d: timestamp goes back (%d after %d)", i, b.hdr.Timestamp, a.hdr.Timestamp)
		}
		if b.hdr.SSRC != 0xdecaf || b.hdr.PayloadType != 98 {
			t.Errorf("packet %d: ssrc %x pt %d", i, b.hdr.SSRC, b.hdr.PayloadType)
		}
		va, _ := parseVP8(a.payload)
		vb, _ := parseVP8(b.payload)
		if vb.frameStart && vb.picID != (va.picID+1)&0x7fff {
			t.Errorf("packet %d: picture id %d after %d", i, vb.picID, va.picID)
		}
	}
	// At the switch: a key frame, timestamp about one frame (33 ms) later.
	sw := fw.out[before]
	v, _ := parseVP8(sw.payload)
	if !v.keyframe || v.width != 640 {
		t.Errorf("the switch is not at f's key frame: %+v", v)
	}
	if gap := sw.hdr.Timestamp - fw.out[before-1].hdr.Timestamp; gap < 1000 || gap > 10000 {
		t.Errorf("timestamp step at the switch: %d", gap)
	}
}

// TestDropPolicyVideo: when a packet is lost for a full queue, the rest of the frame and
// the frames after it are dropped until a key frame, which is asked for; then forwarding
// goes on without a hole in the sequence numbers.
func TestDropPolicyVideo(t *testing.T) {
	up, d, fw := testTrack(t, webrtc.RTPCodecTypeVideo)
	d.target.Store(0)
	g := &frameGen{layer: 0, seq: 1, ts: 0, pic: 1, packets: 3, keyEvery: 5, fill: zeros}
	for _, p := range g.frame() {
		d.write(p)
	}
	if len(fw.out) != 3 {
		t.Fatalf("first key frame: %d packets", len(fw.out))
	}
	fr := g.frame()
	d.write(fr[0])
	d.overflow.Store(true) // fr[1] was dropped for a full queue
	d.write(fr[2])
	for range 3 {
		for _, p := range g.frame() {
			d.write(p)
		}
	}
	if len(fw.out) != 4 {
		t.Fatalf("%d packets forwarded after the loss, want only the one before it", len(fw.out)-3)
	}
	if up.layers[0].lastKey.Load() == 0 {
		t.Error("no key frame asked for after the loss")
	}
	for _, p := range g.frame() { // frame 5: a key frame
		d.write(p)
	}
	if len(fw.out) != 7 || fw.out[4].hdr.SequenceNumber != fw.out[3].hdr.SequenceNumber+1 {
		t.Fatalf("after the key frame: %d packets, sequence %d after %d", len(fw.out), fw.out[4].hdr.SequenceNumber, fw.out[3].hdr.SequenceNumber)
	}
}

// TestQueueFull: a full video queue drops and marks the loss; a full audio queue waits
// briefly, then drops; neither blocks the reader for long.
func TestQueueFull(t *testing.T) {
	_, d, _ := testTrack(t, webrtc.RTPCodecTypeVideo)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for range videoQueue {
		p := getPacket()
		d.enqueue(p, timer)
	}
	p := getPacket()
	d.enqueue(p, timer)
	if !d.overflow.Load() || len(d.queue) != videoQueue {
		t.Fatalf("video: overflow %v, queue %d", d.overflow.Load(), len(d.queue))
	}
	_, a, _ := testTrack(t, webrtc.RTPCodecTypeAudio)
	for range audioQueue {
		a.enqueue(getPacket(), timer)
	}
	start := time.Now()
	a.enqueue(getPacket(), timer)
	if took := time.Since(start); took < audioRetry || took > 200*time.Millisecond {
		t.Errorf("audio retry took %v", took)
	}
	// With room freed during the retry, the packet goes in.
	go func() { time.Sleep(time.Millisecond / 2); (<-a.queue).release() }()
	p = getPacket()
	a.enqueue(p, timer)
	if len(a.queue) != audioQueue {
		t.Errorf("audio queue %d after a retry that found room", len(a.queue))
	}
	close(a.done)
	close(d.done)
}

// TestPauseAndResume: a paused track stops at the end of a frame and resumes at a key
// frame, the sequence numbers going on.
func TestPauseAndResume(t *testing.T) {
	_, d, fw := testTrack(t, webrtc.RTPCodecTypeVideo)
	g := &frameGen{layer: 0, seq: 10, packets: 2, keyEvery: 4, fill: zeros}
	ps := g.frame()
	d.write(ps[0])
	d.target.Store(-1)
	d.write(ps[1]) // the end of the frame still goes
	for range 2 {
		for _, p := range g.frame() {
			d.write(p)
		}
	}
	if len(fw.out) != 2 || d.current.Load() != -1 {
		t.Fatalf("paused: %d packets, current %d", len(fw.out), d.current.Load())
	}
	d.target.Store(0)
	for range 3 {
		for _, p := range g.frame() {
			d.write(p)
		}
	}
	// frame 3 is a delta (skipped), frame 4 a key frame.
	if len(fw.out) != 6 || fw.out[2].hdr.SequenceNumber != fw.out[1].hdr.SequenceNumber+1 {
		t.Fatalf("resumed: %d packets", len(fw.out))
	}
}

// TestE2EESafe: the SFU's decisions never depend on VP8 frame bytes past the clear ones
// (10 of a key frame, 3 of a delta frame): a run with zeros there and a run with random
// bytes forward the same packets with the same headers and descriptors, ask for the same
// key frames, and pass the opaque bytes through unchanged.
func TestE2EESafe(t *testing.T) {
	run := func(fill func([]byte)) (*fakeWriter, []int64) {
		up, d, fw := testTrack(t, webrtc.RTPCodecTypeVideo)
		gens := []*frameGen{
			{layer: 0, seq: 1, ts: 1000, pic: 100, packets: 1, keyEvery: 7, fill: fill},
			{layer: 1, seq: 20000, ts: 2000, pic: 200, packets: 2, keyEvery: 9, fill: fill},
			{layer: 2, seq: 60000, ts: 3000, pic: 32000, packets: 4, keyEvery: 11, fill: fill},
		}
		var keys []int64
		for i := range 60 {
			switch i {
			case 10:
				d.target.Store(2)
			case 30:
				d.target.Store(1)
			case 45:
				d.target.Store(-1)
			case 50:
				d.target.Store(0)
			}
			if i == 20 {
				d.overflow.Store(true)
			}
			for _, g := range gens {
				for _, p := range g.frame() {
					if d.wants(int(p.layer)) {
						d.write(p)
					}
				}
			}
			var k int64
			for l := range up.layers {
				if up.layers[l].lastKey.Load() != 0 {
					k |= 1 << l
				}
				up.layers[l].lastKey.Store(0)
			}
			keys = append(keys, k)
		}
		return fw, keys
	}
	a, ka := run(zeros)
	b, kb := run(random(rand.New(rand.NewPCG(1, 2))))
	if len(a.out) == 0 || len(a.out) != len(b.out) {
		t.Fatalf("forwarded %d and %d packets", len(a.out), len(b.out))
	}
	if fmt.Sprint(ka) != fmt.Sprint(kb) {
		t.Errorf("key frame requests differ:\n%v\n%v", ka, kb)
	}
	layers := map[string]bool{}
	for i := range a.out {
		x, y := a.out[i], b.out[i]
		if x.hdr.SequenceNumber != y.hdr.SequenceNumber || x.hdr.Timestamp != y.hdr.Timestamp || x.hdr.Marker != y.hdr.Marker {
			t.Fatalf("packet %d: headers differ: %+v / %+v", i, x.hdr, y.hdr)
		}
		vx, _ := parseVP8(x.payload)
		clear := vx.descLen + 3
		if vx.keyframe {
			clear = vx.descLen + vp8ClearBytes
		}
		if !vx.frameStart {
			clear = vx.descLen
		}
		if !bytes.Equal(x.payload[:clear], y.payload[:clear]) {
			t.Fatalf("packet %d: descriptor or clear bytes differ", i)
		}
		if bytes.Equal(x.payload[clear:], y.payload[clear:]) {
			t.Fatalf("packet %d: the opaque bytes did not pass through", i)
		}
		layers[fmt.Sprint(vx.width)] = true
	}
	if len(layers) < 3 { // widths of key frames seen: 0 (deltas) and at least two layers
		t.Errorf("the run did not switch layers: %v", layers)
	}
	t.Logf("%d packets forwarded identically; key frame requests per step: %s", len(a.out), strings.Trim(fmt.Sprint(ka[:20]), "[]"))
}

// TestLongSegment: a segment longer than half the sequence number space goes on being
// forwarded (the check for packets from before the segment must not wrap).
func TestLongSegment(t *testing.T) {
	_, d, fw := testTrack(t, webrtc.RTPCodecTypeVideo)
	writeFrames(d, &frameGen{layer: 0, seq: 100, packets: 1, keyEvery: 0, fill: zeros}, 70000)
	if len(fw.out) != 70000 {
		t.Fatalf("forwarded %d of 70000 packets", len(fw.out))
	}
}

// TestAudioForwarded: audio passes with its own sequence numbers and the subscriber's
// SSRC and payload type.
func TestAudioForwarded(t *testing.T) {
	_, d, fw := testTrack(t, webrtc.RTPCodecTypeAudio)
	for i := range 5 {
		p := getPacket()
		p.hdr = rtp.Header{Version: 2, SequenceNumber: uint16(65533 + i), Timestamp: uint32(960 * i), SSRC: 1, PayloadType: 111}
		p.payload = p.buf[:20]
		d.write(p)
	}
	if len(fw.out) != 5 || fw.out[4].hdr.SequenceNumber != 1 || fw.out[0].hdr.PayloadType != 98 {
		t.Fatalf("audio: %+v", fw.out)
	}
}

// TestDeliverInOrder: a reader writes directly while the down track's writer is idle, and
// queues while it is busy or has packets waiting; either way the subscriber gets the
// packets in the order they were read, none twice, none lost.
func TestDeliverInOrder(t *testing.T) {
	_, d, fw := testTrack(t, webrtc.RTPCodecTypeVideo)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	g := &frameGen{layer: 0, seq: 100, packets: 3, fill: zeros}
	var ps []*packet
	for range 4 {
		ps = append(ps, g.frame()...)
	}
	d.deliver(ps[0], timer, nil) // idle: written at once, by the caller
	if len(fw.out) != 1 || len(d.queue) != 0 {
		t.Fatalf("idle: %d written, %d queued; want 1 written", len(fw.out), len(d.queue))
	}
	d.mu.Lock() // the writer is busy with a packet
	d.deliver(ps[1], timer, nil)
	d.deliver(ps[2], timer, nil)
	d.mu.Unlock()
	d.deliver(ps[3], timer, nil) // nobody writing, but packets wait: queued behind them
	if len(d.queue) != 3 || len(fw.out) != 1 {
		t.Fatalf("busy: %d queued, %d written; want 3 queued", len(d.queue), len(fw.out))
	}
	go d.writeLoop()
	deadline := time.Now().Add(5 * time.Second)
	for d.pending.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for _, p := range ps[4:] {
		d.deliver(p, timer, nil) // idle again: written at once
	}
	d.close()
	if len(fw.out) != len(ps) {
		t.Fatalf("%d packets written, want %d", len(fw.out), len(ps))
	}
	for i, s := range fw.out {
		if want := fw.out[0].hdr.SequenceNumber + uint16(i); s.hdr.SequenceNumber != want {
			t.Fatalf("packet %d: sequence number %d, want %d", i, s.hdr.SequenceNumber, want)
		}
	}
}

// TestTransportWideNumbers: a down track whose subscriber negotiated the transport-wide
// sequence number writes it, one number per packet from the subscriber's counter; one that
// did not (here: audio) takes no number, so the numbers the subscriber sees have no gaps.
func TestTransportWideNumbers(t *testing.T) {
	_, video, vw := testTrack(t, webrtc.RTPCodecTypeVideo)
	_, audio, aw := testTrack(t, webrtc.RTPCodecTypeAudio)
	sub := testSubscriber()
	video.sub, audio.sub = sub, sub
	withTWCC(video)

	g := &frameGen{seq: 100, ts: 1000, pic: 7, packets: 2, keyEvery: 1, fill: zeros}
	var a uint16 = 500
	for range 5 {
		for _, p := range g.frame() {
			video.write(p)
			p.release()
		}
		p := getPacket()
		n := copy(p.buf[12:], []byte{1, 2, 3})
		p.hdr = rtp.Header{Version: 2, SequenceNumber: a, Timestamp: uint32(a) * 960, SSRC: 7, PayloadType: 111}
		p.payload = p.buf[12 : 12+n]
		a++
		audio.write(p)
		p.release()
	}
	if len(vw.out) != 10 || len(aw.out) != 5 {
		t.Fatalf("%d video and %d audio packets written, want 10 and 5", len(vw.out), len(aw.out))
	}
	for i, s := range vw.out {
		ext := s.hdr.GetExtension(5)
		if len(ext) != 2 || int(ext[0])<<8|int(ext[1]) != i+1 {
			t.Errorf("video packet %d: transport-wide number % x, want %d", i, ext, i+1)
		}
	}
	for i, s := range aw.out {
		if s.hdr.Extension {
			t.Errorf("audio packet %d carries an extension without a negotiated id", i)
		}
	}
	if n := sub.twccSeq.Load(); n != 10 {
		t.Errorf("%d numbers taken for 10 packets that carry one", n)
	}
	audio.forgetSent()
	video.forgetSent()
}

// testSubscriber is a participant as far as its down tracks need one.
func testSubscriber() *participant {
	return &participant{est: bwe.New(bwe.Config{Initial: 1_000_000})}
}

// TestNTPTime: the Unix epoch and half a second after it in NTP's fixed point.
func TestNTPTime(t *testing.T) {
	if got := ntpTime(time.Unix(0, 0)); got != 2_208_988_800<<32 {
		t.Errorf("epoch: %#x", got)
	}
	if got := ntpTime(time.Unix(1, 500_000_000)); got != (2_208_988_801<<32 | 1<<31) {
		t.Errorf("1.5 s: %#x", got)
	}
}

// TestTickSlots: goroutines of the same slot wake at the same instants whenever they
// start, those of different slots at different ones, and the first wait is never longer
// than the period.
func TestTickSlots(t *testing.T) {
	const period = 300 * time.Millisecond
	phases := map[time.Duration]bool{}
	for range tickSlots {
		phases[tickSlot(period)] = true
	}
	if len(phases) != tickSlots {
		t.Fatalf("%d slots handed out in turn gave %d phases: %v", tickSlots, len(phases), phases)
	}
	for _, c := range []struct{ now, phase, want time.Duration }{
		{10 * time.Millisecond, 0, 290 * time.Millisecond},
		{10 * time.Millisecond, 37500 * time.Microsecond, 27500 * time.Microsecond}, // before the first slot
		{337500 * time.Microsecond, 37500 * time.Microsecond, period},               // at a slot: the next one
		{338 * time.Millisecond, 37500 * time.Microsecond, 299500 * time.Microsecond},
		{10*period + time.Millisecond, 150 * time.Millisecond, 149 * time.Millisecond},
	} {
		if got := slotAfter(c.now, period, c.phase); got != c.want {
			t.Errorf("slotAfter(%v, %v, %v) = %v, want %v", c.now, period, c.phase, got, c.want)
		}
	}
	// Two goroutines of one slot that start at different times wake together.
	phase := 75 * time.Millisecond
	a, b := 1234*time.Millisecond, 1270*time.Millisecond // both before 1.275 s
	if at, bt := a+slotAfter(a, period, phase), b+slotAfter(b, period, phase); at != bt {
		t.Errorf("same slot, started at %v and %v: wake at %v and %v", a, b, at, bt)
	}
}

// slowWriter is a writer whose every write holds the caller, as a system call followed by
// a wait for a processor can on a busy host.
type slowWriter struct {
	fakeWriter
	hold time.Duration
}

func (s *slowWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	time.Sleep(s.hold)
	return s.fakeWriter.WriteRTP(h, payload)
}

// TestSendTimeBeforeWrite: the time a packet is recorded as sent, which the estimator takes
// its one-way delay against, is taken before the write, not after it (decision 74): a
// write that held the goroutine 20 ms made that packet's delay read 20 ms short, the
// least of the estimator's window, and every other packet then read as queued by 20 ms.
func TestSendTimeBeforeWrite(t *testing.T) {
	_, d, _ := testTrack(t, webrtc.RTPCodecTypeVideo)
	withTWCC(d)
	defer d.forgetSent()
	sw := &slowWriter{hold: 20 * time.Millisecond}
	b := *d.bind.Load()
	b.ws = sw
	d.bind.Store(&b)
	g := &frameGen{seq: 100, ts: 1000, pic: 7, packets: 1, fill: zeros}
	p := g.frame()[0]
	defer p.release()
	before := monotime()
	d.write(p)
	after := monotime()
	if len(sw.out) != 1 || after-before < int64(sw.hold) {
		t.Fatalf("%d packets written in %v", len(sw.out), time.Duration(after-before))
	}
	e := d.w.sentVideo[sw.out[0].hdr.SequenceNumber%nackBuffer]
	if e.p == nil || e.at-before > int64(sw.hold)/2 {
		t.Errorf("the packet was recorded as sent %v after the write began (it took %v): want the time before it",
			time.Duration(e.at-before), time.Duration(after-before))
	}
}
