package sfu

import (
	"encoding/binary"
	"testing"
)

// vp8Payload builds a VP8 RTP payload: a descriptor with a 15-bit picture id and a
// TL0PICIDX, then the frame bytes. A key frame's first 10 bytes are a real frame tag,
// start code and size; frame is what follows (the encrypted part under E2EE).
func vp8Payload(start, key bool, picID uint16, tl0 uint8, w, h uint16, frame []byte) []byte {
	b0 := byte(0x80) // X
	if start {
		b0 |= 0x10 // S, partition 0
	}
	p := []byte{b0, 0x80 | 0x40, byte(0x80 | picID>>8), byte(picID), tl0}
	if start && key {
		tag := []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 0, 0} // P=0: key frame
		binary.LittleEndian.PutUint16(tag[6:], w)
		binary.LittleEndian.PutUint16(tag[8:], h)
		p = append(p, tag...)
	} else if start {
		p = append(p, 0x31, 0x02, 0x00) // P=1: a delta frame's 3-byte tag
	}
	return append(p, frame...)
}

func TestParseVP8(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload []byte
		want    vp8Info
		ok      bool
	}{
		{"key frame with size", vp8Payload(true, true, 0x1234, 7, 640, 360, []byte{1, 2, 3}),
			vp8Info{descLen: 5, frameStart: true, keyframe: true, hasPicID: true, picID15: true, picID: 0x1234, picIDOff: 2, hasTL0: true, tl0: 7, tl0Off: 4, width: 640, height: 360}, true},
		{"delta frame", vp8Payload(true, false, 5, 8, 0, 0, []byte{9}),
			vp8Info{descLen: 5, frameStart: true, hasPicID: true, picID15: true, picID: 5, picIDOff: 2, hasTL0: true, tl0: 8, tl0Off: 4}, true},
		{"middle of a frame", vp8Payload(false, false, 5, 8, 0, 0, []byte{0, 0, 0}),
			vp8Info{descLen: 5, hasPicID: true, picID15: true, picID: 5, picIDOff: 2, hasTL0: true, tl0: 8, tl0Off: 4}, true},
		{"minimal descriptor, key frame", []byte{0x10, 0x00, 0, 0},
			vp8Info{descLen: 1, frameStart: true, keyframe: true}, true},
		{"7-bit picture id", []byte{0x90, 0x80, 0x05, 0x01},
			vp8Info{descLen: 3, frameStart: true, hasPicID: true, picID: 5, picIDOff: 2}, true},
		{"partition 1 is no frame start", []byte{0x11, 0x00}, vp8Info{descLen: 1}, true},
		{"TID/KEYIDX byte skipped", []byte{0x90, 0x20, 0xc0, 0x01},
			vp8Info{descLen: 3, frameStart: true}, true},
		{"empty", nil, vp8Info{}, false},
		{"truncated extension", []byte{0x80}, vp8Info{}, false},
		{"truncated picture id", []byte{0x80, 0x80, 0x80}, vp8Info{}, false},
		{"truncated TL0PICIDX", []byte{0x80, 0x40}, vp8Info{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseVP8(tc.payload)
			if ok != tc.ok || (ok && got != tc.want) {
				t.Errorf("parseVP8 = %+v, %v\nwant %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestRewriteVP8(t *testing.T) {
	p := vp8Payload(true, false, 0x7ffe, 200, 0, 0, []byte{0xaa})
	v, _ := parseVP8(p)
	rewriteVP8(p, &v, 0x0003, 9)
	got, _ := parseVP8(p)
	if got.picID != 3 || !got.picID15 || got.tl0 != 9 || p[len(p)-1] != 0xaa {
		t.Errorf("after rewrite: %+v %x", got, p)
	}
}

func FuzzParseVP8(f *testing.F) {
	f.Add(vp8Payload(true, true, 1, 2, 320, 180, nil))
	f.Add([]byte{0x90, 0xe0, 0x81, 0x02, 0x03, 0x04})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, ok := parseVP8(b)
		if !ok {
			return
		}
		if v.descLen > len(b) || (v.hasPicID && v.picIDOff >= v.descLen) || (v.hasTL0 && v.tl0Off >= v.descLen) {
			t.Fatalf("%+v outside %d bytes", v, len(b))
		}
		if v.keyframe && !v.frameStart {
			t.Fatal("a key frame that does not start a frame")
		}
		c := append([]byte(nil), b...)
		rewriteVP8(c, &v, 1, 1) // must not write past the descriptor
	})
}
