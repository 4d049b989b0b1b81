package sfu

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// Simulcast layers: the rids browsers publish (docs/protocol.md), lowest first.
var rids = [maxLayers]string{"q", "h", "f"}

const maxLayers = 3

// layerIndex is a rid's place in rids; a track without simulcast is layer 0.
func layerIndex(rid string) int {
	for i, r := range rids {
		if r == rid {
			return i
		}
	}
	if rid == "" {
		return 0
	}
	return -1
}

// keyframeEvery is the least time between two key frame requests for one layer: a switch
// of many subscribers at once, or a subscriber's decoder asking again and again, costs the
// publisher one key frame.
const keyframeEvery = 500 * time.Millisecond

// upTrack is one publication: a participant's microphone, camera (up to three layers) or
// screen. Its subscribers are an atomic snapshot, replaced whole (copy-on-write) when one
// comes or goes, so the readers never lock.
type upTrack struct {
	owner     *participant
	publisher string
	source    Source
	kind      webrtc.RTPCodecType
	codec     webrtc.RTPCodecParameters
	receiver  *webrtc.RTPReceiver
	simulcast bool
	pc        *webrtc.PeerConnection // the publisher's pub connection, for key frame requests
	m         *Metrics

	layers [maxLayers]layer
	downs  atomic.Pointer[[]*downTrack]
	mu     sync.Mutex // serialises changes of downs

	audioLevelID uint8        // the RFC 6464 extension's id (audio), 0 if not negotiated
	loudness     atomic.Int32 // smoothed 16 x (127 - level)
	live         atomic.Int32 // layers whose reader runs

	sent atomic.Pointer[[]string] // a copy of activeRIDs, for Stats

	// Owned by the room's ticker.
	activeRIDs   []string // what the publisher was last told to send (nil: everything)
	lowerSince   time.Time
	dynacastFrom time.Time
}

// layer is one simulcast layer (or the one stream of a track without layers).
type layer struct {
	rid     string
	track   atomic.Pointer[webrtc.TrackRemote]
	ssrc    atomic.Uint32
	bytes   atomic.Uint64
	packets atomic.Uint64
	last    atomic.Int64 // monotonic ns of the last packet
	lastKey atomic.Int64 // of the last key frame request
	bps     atomic.Int64 // measured by the room's ticker
	peak    atomic.Int64 // the highest bps lately (measure)
	width   atomic.Int32 // from its key frames
	height  atomic.Int32

	prevBytes uint64 // the ticker's
	prevAt    time.Time
}

func newUpTrack(owner *participant, source Source, t *webrtc.TrackRemote, recv *webrtc.RTPReceiver) *upTrack {
	up := &upTrack{
		owner: owner, publisher: owner.id, source: source, kind: t.Kind(), codec: t.Codec(),
		receiver: recv, simulcast: t.RID() != "", pc: owner.pub, m: owner.s.m,
		dynacastFrom: time.Now().Add(dynacastHold),
	}
	for i := range up.layers {
		up.layers[i].rid = rids[i]
	}
	up.downs.Store(&[]*downTrack{})
	if t.Kind() == webrtc.RTPCodecTypeAudio {
		for _, e := range recv.GetParameters().HeaderExtensions {
			if e.URI == audioLevelURI {
				up.audioLevelID = uint8(e.ID)
			}
		}
	}
	return up
}

const audioLevelURI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

func (up *upTrack) addDown(d *downTrack) {
	up.mu.Lock()
	defer up.mu.Unlock()
	old := *up.downs.Load()
	next := make([]*downTrack, len(old), len(old)+1)
	copy(next, old)
	next = append(next, d)
	up.downs.Store(&next)
}

func (up *upTrack) removeDown(d *downTrack) {
	up.mu.Lock()
	defer up.mu.Unlock()
	old := *up.downs.Load()
	next := make([]*downTrack, 0, len(old))
	for _, o := range old {
		if o != d {
			next = append(next, o)
		}
	}
	up.downs.Store(&next)
}

// read is the one reader of a layer: it reads, parses and hands each packet to the down
// tracks that want this layer. It ends when the publisher's connection closes or stops
// sending on this transceiver; the participant's goroutine owns it (and waits for it).
func (up *upTrack) read(l int, t *webrtc.TrackRemote) {
	ly := &up.layers[l]
	video := up.kind == webrtc.RTPCodecTypeVideo
	// Audio gets a short retry when a queue is full (see downTrack.enqueue); one timer
	// per reader, reused.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var level int32
	f := newFanout(up.m) // the direct writes of each packet, sent together (decision 56)
	for {
		p := getPacket()
		n, _, err := t.Read(p.buf[:])
		if err != nil {
			p.release()
			return
		}
		if !p.parse(n, video) {
			p.release()
			continue
		}
		now := monotime()
		p.arrival = now
		p.layer = int8(l)
		ly.bytes.Add(uint64(n))
		ly.packets.Add(1)
		ly.last.Store(now)
		if video {
			if p.vp8.keyframe && p.vp8.width != 0 {
				ly.width.Store(int32(p.vp8.width))
				ly.height.Store(int32(p.vp8.height))
			}
		} else if up.audioLevelID != 0 {
			if ext := p.hdr.GetExtension(up.audioLevelID); len(ext) == 1 {
				// Peak hold: a louder packet raises the level at once; it falls by
				// loudnessDecay a packet (about 20 dB a second), so speech, which comes
				// in syllables, reads as continuous.
				level = max(loudness(ext[0]), level-loudnessDecay, 0)
				up.loudness.Store(level)
			}
		}
		for _, d := range *up.downs.Load() {
			if d.wants(l) {
				d.deliver(p, retry, f)
			}
		}
		f.flush()
		p.release()
	}
}

// requestKeyframe asks the publisher for a key frame on a layer, at most once per
// keyframeEvery.
func (up *upTrack) requestKeyframe(l int) {
	if l < 0 || l >= maxLayers || up.kind != webrtc.RTPCodecTypeVideo {
		return
	}
	ly := &up.layers[l]
	now := monotime()
	last := ly.lastKey.Load()
	if (last != 0 && now-last < int64(keyframeEvery)) || !ly.lastKey.CompareAndSwap(last, now) {
		return
	}
	up.m.keyframeRequests.Inc()
	if ssrc := ly.ssrc.Load(); ssrc != 0 && up.pc != nil {
		up.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
	}
}

// options describes the layers for the allocator: measured bitrate (or a typical one
// before there is a measure), height, and whether packets arrive.
func (up *upTrack) options(now int64) []layerOption {
	n := 1
	if up.simulcast {
		n = maxLayers
	}
	out := make([]layerOption, n)
	for i := range n {
		ly := &up.layers[i]
		bps := int(max(ly.bps.Load(), ly.peak.Load()))
		if bps < nominalBitrate(up.source, up.simulcast, i)/4 {
			bps = nominalBitrate(up.source, up.simulcast, i) / 4
		}
		if ly.bps.Load() == 0 {
			bps = nominalBitrate(up.source, up.simulcast, i)
		}
		out[i] = layerOption{bitrate: bps, height: int(ly.height.Load()), active: now-ly.last.Load() < int64(layerIdle)}
	}
	return out
}

// peakDecay is how much of a layer's peak rate is left after a second of flowing at less:
// half after about 35 s.
const peakDecay = 0.98

// layerIdle: a layer with no packet for this long is not offered to subscribers.
const layerIdle = 1500 * time.Millisecond

// nominalBitrate is what a layer typically needs before its rate is measured.
func nominalBitrate(src Source, simulcast bool, l int) int {
	switch {
	case simulcast:
		return [maxLayers]int{150_000, 450_000, 1_200_000}[l]
	case src == SourceScreen:
		return 1_200_000
	default:
		return 800_000
	}
}

// measure updates each layer's bitrate (the room's ticker calls it): bps, smoothed, and
// peak, the highest bps lately (decaying by peakDecay a second while the layer flows). A
// layer of which nothing arrived since the last tick keeps both: it is paused at the
// publisher (dynacast) or stalled, and when it comes back it costs what it did. The
// allocator counts the higher of the two (options): a layer coming back starts low (the
// encoder ramps it up) and its measure rises for seconds. (Before 2026-11-28 a paused
// layer's rate decayed to the floor of a quarter of its nominal rate, and one coming back
// was costed at its ramp: the allocator's dynacast choice asked for a paused top layer
// back, and once it flowed, chose it for a subscriber whose link carries half of it.
// Behind a steady 600 kbit/s cap, with no other subscriber, that was every 7-10 s: the top
// layer, 300-460 ms of queue, audio lost, a cut, the middle layer, the top paused again.)
func (up *upTrack) measure(now time.Time) {
	for i := range up.layers {
		ly := &up.layers[i]
		b := ly.bytes.Load()
		if b == ly.prevBytes && ly.bps.Load() != 0 {
			ly.prevAt = now
			continue
		}
		if !ly.prevAt.IsZero() {
			dt := now.Sub(ly.prevAt).Seconds()
			if dt > 0 {
				rate := int64(float64(b-ly.prevBytes) * 8 / dt)
				old := ly.bps.Load()
				bps := rate
				if old != 0 {
					bps = (old*3 + rate) / 4
				}
				ly.bps.Store(bps)
				ly.peak.Store(max(bps, int64(float64(ly.peak.Load())*math.Pow(peakDecay, dt))))
			}
		}
		ly.prevBytes, ly.prevAt = b, now
	}
}

// dynacast tells the publisher which layers anybody receives: layers above the highest
// any subscriber wants are paused (after dynacastHold), and come back as soon as one is
// wanted again. It runs on the room's ticker.
func (up *upTrack) dynacast(now time.Time) {
	if !up.simulcast || now.Before(up.dynacastFrom) {
		return
	}
	top := -1
	for _, d := range *up.downs.Load() {
		top = max(top, int(d.desired.Load()))
	}
	want := make([]string, 0, maxLayers)
	for i := 0; i <= top && i < maxLayers; i++ {
		want = append(want, rids[i])
	}
	cur := up.activeRIDs
	if cur == nil {
		cur = rids[:]
	}
	switch {
	case len(want) == len(cur):
		up.lowerSince = time.Time{}
		return
	case len(want) < len(cur):
		if up.lowerSince.IsZero() {
			up.lowerSince = now
		}
		if now.Sub(up.lowerSince) < dynacastHold {
			return
		}
	}
	up.lowerSince = time.Time{}
	up.activeRIDs = want
	sent := append([]string(nil), want...)
	up.sent.Store(&sent)
	up.owner.sink().Layers(up.source, want)
}
