package bench

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Synthetic media. Every packet the bench sends, to the SFU or to the floor relay, is an
// RTP packet made here, and every payload ends with a trailer the receiver reads back:
//
//	magic "BSB1" (4) | stream id (4) | packet counter (4) | send time (8)
//
// The send time is Unix nanoseconds, taken just before the packet is handed to the socket
// or to pion; senders and receivers are in the same process, so receive time minus send
// time is the one-way latency. It is the wall clock (CLOCK_REALTIME) because the kernel's
// socket receive timestamps are on it too (tsconn.go); a clock step during a run would
// show as one outlier. The
// trailer sits at the end so that an SFU rewriting the VP8 payload descriptor (picture ids)
// does not move it. The counter is the publisher's own, which an SFU does not rewrite: loss
// is counted from it (packets sent in the measured window that a subscriber never got), as
// well as from the RTP sequence numbers the subscriber sees.
const (
	trailerLen = 20
	trailerMag = "BSB1"
)

// now is the time on the bench's clock: Unix nanoseconds.
func now() int64 { return time.Now().UnixNano() }

// Kind of a stream.
const (
	kindAudio = 0
	kindVideo = 1
)

// streamID numbers a publisher's stream: publisher index, kind, simulcast layer.
func streamID(pub, kind, layer int) uint32 { return uint32(pub)<<4 | uint32(kind)<<2 | uint32(layer) }

func streamKind(id uint32) int { return int(id>>2) & 3 }

// Profile is the synthetic media of one publisher.
type Profile struct {
	AudioInterval time.Duration // one Opus packet per interval
	AudioSize     int           // RTP payload bytes of an audio packet
	VideoFPS      int           // frames per second
	VideoPackets  int           // RTP packets per frame of the top layer
	VideoSize     int           // RTP payload bytes of a video packet of the top layer
	// Simulcast: the camera as three layers q, h, f (docs/protocol.md) to the SFU; the top
	// one (f) is VideoPackets x VideoSize per frame, h about a third of it and q a ninth.
	// The floor relay and p2p get the top layer only.
	Simulcast     bool
	KeyframeEvery time.Duration // periodic key frames (0: only the first and on request)
	// AnySeq starts each stream's RTP sequence numbers anywhere in the 16-bit space (as
	// RFC 3550 allows); otherwise in 1..32767, as Chrome does.
	AnySeq bool
}

// layer is one encoding of the camera.
type layer struct {
	rid           string
	width, height int
	packets, size int // per frame
}

// DefaultProfile is about what a browser sends from a 640x360 camera: Opus at 32 kbit/s
// in 20 ms packets, and VP8 at 30 frames per second in three simulcast layers of about
// 100, 300 and 900 kbit/s (the Go client's layers), the top one in three packets a frame.
func DefaultProfile() Profile {
	return Profile{AudioInterval: 20 * time.Millisecond, AudioSize: 80, VideoFPS: 30, VideoPackets: 3, VideoSize: 1200, Simulcast: true}
}

// layers returns the camera's encodings, lowest first; all of them, or only the top one.
func (p Profile) layers(all bool) []layer {
	if p.VideoFPS == 0 {
		return nil
	}
	top := layer{rid: "f", width: 640, height: 360, packets: p.VideoPackets, size: p.VideoSize}
	if !p.Simulcast || !all {
		return []layer{top}
	}
	frac := func(rid string, w, h, div int) layer {
		bytes := max(p.VideoPackets*p.VideoSize/div, vp8KeyHeaderLen+trailerLen)
		n := (bytes + 1199) / 1200
		return layer{rid: rid, width: w, height: h, packets: n, size: max(bytes/n, vp8KeyHeaderLen+trailerLen)}
	}
	return []layer{frac("q", 160, 90, 9), frac("h", 320, 180, 3), top}
}

func (p Profile) validate() error {
	switch {
	case p.AudioInterval < time.Millisecond || p.AudioInterval > time.Second:
		return fmt.Errorf("audio interval %v: from 1ms to 1s", p.AudioInterval)
	case p.AudioSize < trailerLen+1 || p.AudioSize > 1200:
		return fmt.Errorf("audio size %d: from %d to 1200 bytes", p.AudioSize, trailerLen+1)
	case p.VideoFPS < 0 || p.VideoFPS > 120:
		return fmt.Errorf("video fps %d: from 0 (no video) to 120", p.VideoFPS)
	case p.VideoFPS > 0 && (p.VideoPackets < 1 || p.VideoPackets > 50):
		return fmt.Errorf("video packets per frame %d: from 1 to 50", p.VideoPackets)
	case p.VideoFPS > 0 && (p.VideoSize < vp8KeyHeaderLen+trailerLen || p.VideoSize > 1200):
		return fmt.Errorf("video size %d: from %d to 1200 bytes", p.VideoSize, vp8KeyHeaderLen+trailerLen)
	}
	return nil
}

// PacketsPerSecond is the packets one subscriber receives from one publisher per second:
// audio and the top video layer.
func (p Profile) PacketsPerSecond() float64 {
	return float64(time.Second)/float64(p.AudioInterval) + float64(p.VideoFPS*p.VideoPackets)
}

// BitsPerSecond is the RTP bit rate (12-byte headers included) of the same.
func (p Profile) BitsPerSecond() float64 {
	a := float64(time.Second) / float64(p.AudioInterval) * float64(12+p.AudioSize)
	v := float64(p.VideoFPS*p.VideoPackets) * float64(12+p.VideoSize)
	return 8 * (a + v)
}

// VP8 payload: descriptor with a 15-bit picture id (X, S, I, M bits), then on the first
// packet of a frame the 3-byte frame tag, and on a key frame the start code and size.
const (
	vp8DescLen      = 4
	vp8KeyHeaderLen = vp8DescLen + 10
)

// fillAudio writes an Opus-looking payload of len(b) bytes (b is reused between packets).
func fillAudio(b []byte) {
	b[0] = 0x78 // TOC: SILK-only wideband 20 ms, one frame (the SFU does not decode it)
}

// fillVP8 writes the VP8 part of a video payload: a packet of a frame with picture id pid,
// the first one of the frame or not, of a key frame of width x height or not.
func fillVP8(b []byte, pid uint16, first, key bool, width, height int) {
	b[0] = 0x80 // X
	if first {
		b[0] |= 0x10 // S: start of partition 0
	}
	b[1] = 0x80 // I: picture id present
	b[2] = 0x80 | byte(pid>>8&0x7f)
	b[3] = byte(pid)
	if !first {
		return
	}
	// Frame tag (RFC 6386 9.1): bit 0 is 0 for a key frame; version 0, show_frame 1,
	// first partition size (19 bits) kept small.
	size := uint32(len(b) - vp8DescLen - 10)
	tag := uint32(0x10) | size<<5
	if !key {
		tag |= 1
	}
	b[4], b[5], b[6] = byte(tag), byte(tag>>8), byte(tag>>16)
	if key {
		b[7], b[8], b[9] = 0x9d, 0x01, 0x2a
		binary.LittleEndian.PutUint16(b[10:], uint16(width))
		binary.LittleEndian.PutUint16(b[12:], uint16(height))
	}
}

// putTrailer writes the trailer at the end of payload and returns the send time written.
func putTrailer(payload []byte, stream, counter uint32) int64 {
	t := payload[len(payload)-trailerLen:]
	copy(t, trailerMag)
	binary.BigEndian.PutUint32(t[4:], stream)
	binary.BigEndian.PutUint32(t[8:], counter)
	ts := now()
	binary.BigEndian.PutUint64(t[12:], uint64(ts))
	return ts
}

// readTrailer reads the trailer of a payload; ok is false for packets the bench did not
// make (padding, probes).
func readTrailer(payload []byte) (stream, counter uint32, sent int64, ok bool) {
	if len(payload) < trailerLen {
		return 0, 0, 0, false
	}
	t := payload[len(payload)-trailerLen:]
	if string(t[:4]) != trailerMag {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(t[4:]), binary.BigEndian.Uint32(t[8:]), int64(binary.BigEndian.Uint64(t[12:])), true
}

// rtpPayload returns the payload of a raw RTP packet (header, CSRCs, extensions and
// padding skipped) and its sequence number.
func rtpPayload(b []byte) (payload []byte, seq uint16, ok bool) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return nil, 0, false
	}
	seq = binary.BigEndian.Uint16(b[2:])
	off := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 { // extension
		if len(b) < off+4 {
			return nil, 0, false
		}
		off += 4 + 4*int(binary.BigEndian.Uint16(b[off+2:]))
	}
	end := len(b)
	if b[0]&0x20 != 0 { // padding
		if end <= off {
			return nil, 0, false
		}
		end -= int(b[end-1])
	}
	if end < off {
		return nil, 0, false
	}
	return b[off:end], seq, true
}
