package client

import (
	"encoding/binary"
	"time"

	"github.com/pion/logging"
)

// quietPion keeps pion's own logs (a closing connection's "read/write on closed pipe")
// out of the test output.
var quietPion = &logging.DefaultLoggerFactory{DefaultLogLevel: logging.LogLevelDisabled}

// Synthetic media. The Go participant sends Opus and VP8 RTP whose payloads are not real
// audio or video but are shaped like them, so that a server treats them as it treats a
// browser's: VP8 payloads start with a payload descriptor (15-bit picture id) and, on the
// first packet of each frame, a VP8 frame tag; key frames carry the start code and the
// frame size. Every payload ends with 8 bytes: the time it was sent, in Unix nanoseconds
// (little endian), which SentAt reads back, so receivers can measure one-way latency.

// stampLen is the size of the send-time stamp at the end of every payload.
const stampLen = 8

// SentAt returns the send time a synthetic payload carries in its last 8 bytes.
func SentAt(payload []byte) (time.Time, bool) {
	if len(payload) < stampLen {
		return time.Time{}, false
	}
	ns := int64(binary.LittleEndian.Uint64(payload[len(payload)-stampLen:]))
	if ns <= 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

func stampAt(b []byte, t time.Time) {
	binary.LittleEndian.PutUint64(b[len(b)-stampLen:], uint64(t.UnixNano()))
}

// audioPayload is an Opus-sized payload (80 bytes) with its stamp.
func audioPayload(buf []byte, t time.Time) []byte {
	p := buf[:80]
	clear(p[:80-stampLen])
	stampAt(p, t)
	return p
}

// maxVideoPayload is the most VP8 data put in one packet (browsers use about 1100-1200).
const maxVideoPayload = 1100

// vp8Frame splits one synthetic VP8 frame of about size bytes into RTP payloads: each has
// the payload descriptor (S set on the first), the first has the frame tag (and on a key
// frame the start code and width x height), and each ends with the stamp.
func vp8Frame(key bool, picID uint16, width, height, size int, t time.Time) [][]byte {
	var out [][]byte
	for first := true; first || size > 0; first = false {
		n := min(max(size, 0), maxVideoPayload)
		size -= n
		b := []byte{0x80, 0x80, byte(0x80 | picID>>8&0x7f), byte(picID)} // X, I, M: 15-bit picture id
		if first {
			b[0] |= 0x10 // S, partition 0
			if key {
				tag := []byte{0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 0, 0} // P=0
				binary.LittleEndian.PutUint16(tag[6:], uint16(width))
				binary.LittleEndian.PutUint16(tag[8:], uint16(height))
				b = append(b, tag...)
			} else {
				b = append(b, 0x51, 0x02, 0x00) // P=1
			}
		}
		b = append(b, make([]byte, n+stampLen)...)
		stampAt(b, t)
		out = append(out, b)
	}
	return out
}

// vp8KeyframeSize returns the width and height a VP8 payload's key frame says, or zeros
// for anything else (a delta frame, a later packet of a frame).
func vp8KeyframeSize(p []byte) (w, h int) {
	if len(p) < 1 {
		return 0, 0
	}
	i := 1
	if p[0]&0x80 != 0 { // X
		if len(p) < 2 {
			return 0, 0
		}
		ext := p[1]
		i = 2
		if ext&0x80 != 0 { // I
			if len(p) > i && p[i]&0x80 != 0 {
				i += 2
			} else {
				i++
			}
		}
		if ext&0x40 != 0 {
			i++
		}
		if ext&0x30 != 0 {
			i++
		}
	}
	if p[0]&0x10 == 0 || p[0]&0x07 != 0 || len(p) < i+10 || p[i]&0x01 != 0 {
		return 0, 0
	}
	if p[i+3] != 0x9d || p[i+4] != 0x01 || p[i+5] != 0x2a {
		return 0, 0
	}
	return int(binary.LittleEndian.Uint16(p[i+6:]) & 0x3fff), int(binary.LittleEndian.Uint16(p[i+8:]) & 0x3fff)
}
