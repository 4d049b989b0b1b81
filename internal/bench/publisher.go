package bench

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// rtpWriter takes one raw RTP packet; it may keep no reference to b after it returns.
type rtpWriter func(b []byte) error

// publisher sends one participant's synthetic audio and video.
type publisher struct {
	idx   int
	prof  Profile
	w     *window
	audio *txStream
	video *txStream
	// Where the packets go: pion tracks (SFU) or a UDP socket (floor).
	writeAudio, writeVideo rtpWriter
	// keyframe is set when a subscriber asked for a key frame (PLI or FIR from the SFU).
	keyframe atomic.Bool
	errs     atomic.Int64 // writes that failed
}

func newPublisher(idx int, prof Profile, w *window) *publisher {
	p := &publisher{idx: idx, prof: prof, w: w, audio: &txStream{id: streamID(idx, kindAudio, 0)}}
	if prof.VideoFPS > 0 {
		p.video = &txStream{id: streamID(idx, kindVideo, 0)}
	}
	return p
}

// streams returns the publisher's streams.
func (p *publisher) streams() []*txStream {
	if p.video == nil {
		return []*txStream{p.audio}
	}
	return []*txStream{p.audio, p.video}
}

// run sends until ctx ends. It starts at a random offset within one packet interval, so
// that many publishers do not send in lock step.
func (p *publisher) run(ctx context.Context) {
	offset := time.Duration(rand.Int64N(int64(p.prof.AudioInterval)))
	select {
	case <-ctx.Done():
		return
	case <-time.After(offset):
	}
	audio := time.NewTicker(p.prof.AudioInterval)
	defer audio.Stop()
	var videoC <-chan time.Time
	if p.video != nil {
		video := time.NewTicker(time.Second / time.Duration(p.prof.VideoFPS))
		defer video.Stop()
		videoC = video.C
	}
	var (
		buf          = make([]byte, 12+1200)
		aseq, vseq   = uint16(rand.Uint32()), uint16(rand.Uint32())
		ats, vts     = rand.Uint32(), rand.Uint32()
		pid          = uint16(rand.Uint32() & 0x7fff)
		lastKey      time.Time
		aSSRC, vSSRC        = 0x42000000 | p.audio.id, 0x42000000 | streamID(p.idx, kindVideo, 0)
		audioTick           = uint32(48000 * p.prof.AudioInterval / time.Second)
		videoTick    uint32 = 0
	)
	if p.video != nil {
		videoTick = uint32(90000 / p.prof.VideoFPS)
	}
	p.keyframe.Store(true) // the first frame is a key frame
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
			pid = (pid + 1) & 0x7fff
			key := false
			if p.keyframe.Load() || (p.prof.KeyframeEvery > 0 && time.Since(lastKey) >= p.prof.KeyframeEvery) {
				// Key frames on request at most every 300 ms, like a browser's encoder.
				if time.Since(lastKey) >= 300*time.Millisecond {
					key, lastKey = true, time.Now()
					p.keyframe.Store(false)
				}
			}
			for i := 0; i < p.prof.VideoPackets; i++ {
				vseq++
				b := buf[:12+p.prof.VideoSize]
				putHeader(b, 96, vseq, vts, vSSRC, i == p.prof.VideoPackets-1)
				fillVP8(b[12:], pid, i == 0, key)
				p.send(p.writeVideo, p.video, b)
			}
		}
	}
}

func (p *publisher) send(w rtpWriter, s *txStream, b []byte) {
	c := s.counter
	s.counter++
	sent := putTrailer(b[12:], s.id, c)
	if p.w.contains(sent) {
		s.inWindow.Add(1)
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
