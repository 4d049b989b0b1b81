package sfu

import "encoding/binary"

// vp8Info is what the SFU reads of a VP8 RTP payload: the payload descriptor (RFC 7741
// section 4.2) and, on the first packet of a frame, the first bytes of the VP8 frame itself
// (RFC 6386 section 9.1): the P bit of its first byte (key frame or not) and, on a key
// frame, the width and height in bytes 6 to 9.
//
// That is all: with end-to-end encryption (RFC 9605 SFrame through insertable streams) the
// sender leaves the first 10 bytes of a key frame and the first 3 of a delta frame in the
// clear and encrypts the rest, and the descriptor is added by the packetizer after the
// transform, so every decision the SFU makes (key frames, layer switches, picture ids)
// stays possible. Nothing here reads further into the frame.
type vp8Info struct {
	descLen    int  // bytes of payload descriptor before the VP8 frame data
	frameStart bool // S=1 and partition 0: the first packet of a frame
	keyframe   bool // frameStart and the frame's P bit is 0
	// Picture ID (I bit): 7 or 15 bits (M bit), at picIDOff in the payload.
	hasPicID bool
	picID15  bool
	picID    uint16
	picIDOff int
	// TL0PICIDX (L bit), at tl0Off.
	hasTL0 bool
	tl0    uint8
	tl0Off int
	// Key frames only: the frame's size.
	width, height uint16
}

// vp8ClearBytes is how many bytes of a VP8 frame parseVP8 may read: the first 10 of a key
// frame (3 of a delta frame). The E2EE test checks that bytes past these change nothing.
const vp8ClearBytes = 10

// parseVP8 parses the payload descriptor of a VP8 RTP payload. ok is false for a payload
// too short for its descriptor.
func parseVP8(p []byte) (v vp8Info, ok bool) {
	if len(p) < 1 {
		return v, false
	}
	x := p[0]&0x80 != 0
	s := p[0]&0x10 != 0
	pid := p[0] & 0x07
	i := 1
	if x {
		if len(p) < 2 {
			return v, false
		}
		ext := p[1]
		i = 2
		if ext&0x80 != 0 { // I: picture id
			if len(p) < i+1 {
				return v, false
			}
			v.hasPicID, v.picIDOff = true, i
			if p[i]&0x80 != 0 { // M: 15 bits
				if len(p) < i+2 {
					return v, false
				}
				v.picID15 = true
				v.picID = binary.BigEndian.Uint16(p[i:]) & 0x7fff
				i += 2
			} else {
				v.picID = uint16(p[i] & 0x7f)
				i++
			}
		}
		if ext&0x40 != 0 { // L: TL0PICIDX
			if len(p) < i+1 {
				return v, false
			}
			v.hasTL0, v.tl0Off, v.tl0 = true, i, p[i]
			i++
		}
		if ext&0x30 != 0 { // T or K: TID/Y/KEYIDX
			if len(p) < i+1 {
				return v, false
			}
			i++
		}
	}
	v.descLen = i
	v.frameStart = s && pid == 0
	if v.frameStart && len(p) > i {
		// RFC 6386 9.1: the first bit of the frame tag is P, 0 for a key frame.
		v.keyframe = p[i]&0x01 == 0
		// A key frame's tag (3 bytes) is followed by the start code 9d 01 2a and the
		// 14-bit width and height (little endian, 2 bits of scaling above each).
		if v.keyframe && len(p) >= i+vp8ClearBytes && p[i+3] == 0x9d && p[i+4] == 0x01 && p[i+5] == 0x2a {
			v.width = binary.LittleEndian.Uint16(p[i+6:]) & 0x3fff
			v.height = binary.LittleEndian.Uint16(p[i+8:]) & 0x3fff
		}
	}
	return v, true
}

// rewriteVP8 writes a picture id and TL0PICIDX into a copy of a payload whose descriptor
// v describes (the fields keep their width: 7 or 15 bits).
func rewriteVP8(dst []byte, v *vp8Info, picID uint16, tl0 uint8) {
	if v.hasPicID {
		if v.picID15 {
			binary.BigEndian.PutUint16(dst[v.picIDOff:], 0x8000|picID&0x7fff)
		} else {
			dst[v.picIDOff] = byte(picID & 0x7f)
		}
	}
	if v.hasTL0 {
		dst[v.tl0Off] = tl0
	}
}

// picIDMask is the range of a descriptor's picture id.
func (v *vp8Info) picIDMask() uint16 {
	if v.picID15 {
		return 0x7fff
	}
	return 0x7f
}
