package bench

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// rtpWriter takes one raw RTP packet; it may keep no reference to b after it returns.
type rtpWriter func(b []byte) error

// publisher sends one participant's synthetic audio and video.
type publisher struct {
	idx    int
	prof   Profile
	w      *window
	layers []layer
	audio  *txStream
	video  []*txStream // one per layer, lowest first
	// Where the packets go: pion tracks (SFU, p2p) or a UDP socket (floor). Set before run.
	writeAudio rtpWriter
	writeVideo []rtpWriter
	// Per layer: sent at all (dynacast: the SFU says which layers anybody receives), and
	// a key frame asked for (PLI or FIR).
	active   []atomic.Bool
	keyframe []atomic.Bool
	errs     atomic.Int64 // writes that failed
	// ready is closed when the writers are set: run sends nothing before.
	ready     chan struct{}
	readyOnce sync.Once
}

// start lets run begin sending (the writers are set).
func (p *publisher) start() { p.readyOnce.Do(func() { close(p.ready) }) }

// newPublisher makes publisher idx's streams: audio and the camera in every layer of the
// profile (simulcast) or only its top layer.
func newPublisher(idx int, prof Profile, w *window, simulcast bool) *publisher {
	p := &publisher{idx: idx, prof: prof, w: w, audio: &txStream{id: streamID(idx, kindAudio, 0)}, ready: make(chan struct{})}
	p.layers = prof.layers(simulcast)
	for i := range p.layers {
		p.video = append(p.video, &txStream{id: streamID(idx, kindVideo, i)})
	}
	p.writeVideo = make([]rtpWriter, len(p.layers))
	p.active = make([]atomic.Bool, len(p.layers))
	p.keyframe = make([]atomic.Bool, len(p.layers))
	for i := range p.active {
		p.active[i].Store(true)
		p.keyframe[i].Store(true) // the first frame is a key frame
	}
	return p
}

// streams returns the publisher's streams.
func (p *publisher) streams() []*txStream { return append([]*txStream{p.audio}, p.video...) }

// setActive takes a layers message: only the named rids are sent.
func (p *publisher) setActive(rids []string) {
	for i, l := range p.layers {
		on := len(p.layers) == 1
		for _, r := range rids {
			on = on || r == l.rid
		}
		if on && !p.active[i].Load() {
			p.keyframe[i].Store(true) // a layer coming back starts with a key frame
		}
		p.active[i].Store(on)
	}
}

// run sends until ctx ends, from when start is called. It begins at a random offset within
// one packet interval, so that many publishers do not send in lock step.
func (p *publisher) run(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-p.ready:
	}
	offset := time.Duration(rand.Int64N(int64(p.prof.AudioInterval)))
	select {
	case <-ctx.Done():
		return
	case <-time.After(offset):
	}
	audio := time.NewTicker(p.prof.AudioInterval)
	defer audio.Stop()
	var videoC <-chan time.Time
	var videoTick uint32
	if len(p.layers) > 0 {
		video := time.NewTicker(time.Second / time.Duration(p.prof.VideoFPS))
		defer video.Stop()
		videoC = video.C
		videoTick = uint32(90000 / p.prof.VideoFPS)
	}
	type vstate struct {
		seq     uint16
		pid     uint16
		ssrc    uint32
		lastKey time.Time
	}
	var (
		buf       = make([]byte, 12+1200)
		aseq      = p.firstSeq()
		ats, vts  = rand.Uint32(), rand.Uint32()
		aSSRC     = 0x42000000 | p.audio.id
		audioTick = uint32(48000 * p.prof.AudioInterval / time.Second)
		vs        = make([]vstate, len(p.layers))
	)
	for i := range vs {
		vs[i] = vstate{seq: p.firstSeq(), pid: uint16(rand.Uint32() & 0x7fff), ssrc: 0x42000000 | p.video[i].id}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-audio.C:
			aseq++
			ats += audioTick
			b := buf[:12+p.prof.AudioSize]
			putHeader(b, 111, aseq, ats, aSSRC, true)
			fillAudio(b[12:])
			p.send(p.writeAudio, p.audio, b)
		case <-videoC:
			vts += videoTick
			for li, l := range p.layers {
				if !p.active[li].Load() {
					continue
				}
				v := &vs[li]
				v.pid = (v.pid + 1) & 0x7fff
				key := false
				if p.keyframe[li].Load() || (p.prof.KeyframeEvery > 0 && time.Since(v.lastKey) >= p.prof.KeyframeEvery) {
					// Key frames on request at most every 300 ms, like a browser's encoder.
					if time.Since(v.lastKey) >= 300*time.Millisecond {
						key, v.lastKey = true, time.Now()
						p.keyframe[li].Store(false)
					}
				}
				for i := 0; i < l.packets; i++ {
					v.seq++
					b := buf[:12+l.size]
					putHeader(b, 96, v.seq, vts, v.ssrc, i == l.packets-1)
					fillVP8(b[12:], v.pid, i == 0, key, l.width, l.height)
					p.send(p.writeVideo[li], p.video[li], b)
				}
			}
		}
	}
}

// firstSeq is a stream's first RTP sequence number: random in 1..32767 as libwebrtc
// (Chrome) chooses it, or anywhere (Profile.AnySeq) as RFC 3550 allows and other stacks do.
func (p *publisher) firstSeq() uint16 {
	if p.prof.AnySeq {
		return uint16(rand.Uint32())
	}
	return uint16(1 + rand.IntN(32767))
}

func (p *publisher) send(w rtpWriter, s *txStream, b []byte) {
	c := s.counter
	s.counter++
	sent := putTrailer(b[12:], s.id, c)
	if p.w.contains(sent) {
		s.inWindow.Add(1)
	}
	if w == nil {
		return
	}
	if err := w(b); err != nil {
		p.errs.Add(1)
	}
}

// putHeader writes a 12-byte RTP header.
func putHeader(b []byte, pt uint8, seq uint16, ts, ssrc uint32, marker bool) {
	b[0] = 0x80
	b[1] = pt
	if marker {
		b[1] |= 0x80
	}
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], ts)
	binary.BigEndian.PutUint32(b[8:], ssrc)
}
