package sfu

import (
	"sync"
	"sync/atomic"

	"github.com/pion/rtp"
)

// maxPacket is the largest RTP packet the SFU reads (pion's receive MTU is 1460).
const maxPacket = 1500

// packet is one RTP packet read from a publisher, shared read-only by every down track it
// is queued to. The reader holds one reference and each queue another; the last release
// puts it back in the pool. Nothing on the packet path allocates once the pool is warm.
type packet struct {
	refs    atomic.Int32
	buf     [maxPacket]byte
	hdr     rtp.Header // parsed from buf; its extension payloads point into buf
	payload []byte     // the RTP payload within buf, without padding
	layer   int8       // the simulcast layer it came from (0 for a track without layers)
	vp8     vp8Info    // video only
	arrival int64      // monotonic nanoseconds when it was read
}

var packetPool = sync.Pool{New: func() any { return new(packet) }}

func getPacket() *packet {
	p := packetPool.Get().(*packet)
	p.refs.Store(1)
	return p
}

func (p *packet) ref() { p.refs.Add(1) }

func (p *packet) release() {
	if p.refs.Add(-1) == 0 {
		p.payload = nil
		packetPool.Put(p)
	}
}

// parse reads the RTP header and the VP8 descriptor of the n bytes in buf. ok is false for
// a packet to drop: malformed, or padding only (probing: nothing to forward).
func (p *packet) parse(n int, video bool) (ok bool) {
	hl, err := p.hdr.Unmarshal(p.buf[:n])
	if err != nil {
		return false
	}
	end := n
	if p.hdr.Padding {
		pad := int(p.buf[n-1])
		if pad == 0 || hl+pad > n {
			return false
		}
		end -= pad
	}
	if end <= hl {
		return false
	}
	p.payload = p.buf[hl:end]
	if video {
		p.vp8, ok = parseVP8(p.payload)
		return ok
	}
	return true
}
