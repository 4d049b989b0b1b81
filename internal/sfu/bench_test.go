package sfu

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// nullWriter is a down track's connection that costs nothing: what is left is the SFU's
// own work per packet (parsing, fan-out, queues, rewriting).
type nullWriter struct{}

func (nullWriter) WriteRTP(*rtp.Header, []byte) (int, error) { return 0, nil }
func (nullWriter) Write(b []byte) (int, error)               { return len(b), nil }

// BenchmarkWriteVideo: one down track's writer rewriting and writing VP8 packets of the
// layer it forwards. It must not allocate.
func BenchmarkWriteVideo(b *testing.B) {
	up, d, _ := testTrack(&testing.T{}, webrtc.RTPCodecTypeVideo)
	_ = up
	d.bind.Store(&binding{ssrc: 1, pt: 96, clockRate: 90000, ws: nullWriter{}})
	g := &frameGen{layer: 0, seq: 1, packets: 4, keyEvery: 30, fill: zeros}
	var ps []*packet
	for range 60 {
		ps = append(ps, g.frame()...)
	}
	for _, p := range ps {
		p.refs.Store(1 << 30) // never back to the pool: reused for every iteration
	}
	d.write(ps[0])
	b.ReportAllocs()
	b.ResetTimer()
	seq := ps[len(ps)-1].hdr.SequenceNumber
	for i := range b.N {
		p := ps[i%len(ps)]
		seq++
		p.hdr.SequenceNumber = seq // keep sequence numbers going forward
		d.write(p)
	}
	b.StopTimer()
	if d.w.fwdPackets == 0 && d.m.forwarded(webrtc.RTPCodecTypeVideo).packets == nil {
		b.Fatal("nothing forwarded")
	}
}

// BenchmarkFanout: a reader handing each packet to n subscribers (written directly when
// their writers are idle, else queued for them), writing to nothing. ns/op is the SFU's cost per incoming packet;
// divide by n for the cost per forwarded packet.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			m := NewMetrics(nil)
			up := &upTrack{publisher: "prt_pub", source: SourceCamera, kind: webrtc.RTPCodecTypeVideo, simulcast: true, m: m}
			up.downs.Store(&[]*downTrack{})
			var wg sync.WaitGroup
			var downs []*downTrack
			for range n {
				d := newDownTrack(up, testSubscriber())
				d.bind.Store(&binding{ssrc: 1, pt: 96, clockRate: 90000, ws: nullWriter{}})
				up.addDown(d)
				downs = append(downs, d)
				wg.Add(1)
				go func() { defer wg.Done(); d.writeLoop() }()
			}
			g := &frameGen{layer: 0, seq: 1, packets: 4, keyEvery: 30, fill: zeros}
			src := g.frame()
			retry := time.NewTimer(time.Hour)
			retry.Stop()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				p := getPacket()
				s := src[i%len(src)]
				p.hdr, p.vp8, p.layer = s.hdr, s.vp8, 0
				p.hdr.SequenceNumber = uint16(i)
				n := copy(p.buf[:], s.payload)
				p.payload = p.buf[:n]
				for _, d := range *up.downs.Load() {
					if d.wants(0) {
						d.deliver(p, retry, nil)
					}
				}
				p.release()
			}
			b.StopTimer()
			for _, d := range downs {
				up.removeDown(d)
				d.close()
			}
			wg.Wait()
		})
	}
}

// BenchmarkSRTPEncrypt: what a direct path's encryption of one 1200-byte video packet costs
// (directTx.write: the header marshalled, the payload copied, pion's EncryptRTP with
// AEAD_AES_256_GCM), with and without cryptex, against a bare AES-256-GCM Seal of the same
// packet with RFC 7714's nonce (gcm): pion's overhead over the cipher alone
// (docs/benchmarks.md, "Forwarding from the socket reader, and an SRTP of our own").
func BenchmarkSRTPEncrypt(b *testing.B) {
	hdr := func() *rtp.Header {
		h := &rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 1000, Timestamp: 12345, SSRC: 0x11223344, Marker: true}
		if err := h.SetExtension(1, []byte{0x01, 0x02}); err != nil {
			b.Fatal(err)
		}
		if err := h.SetExtension(3, []byte{0x01, 0x02, 0x03}); err != nil {
			b.Fatal(err)
		}
		return h
	}
	payload := make([]byte, 1200)
	key, salt := make([]byte, 32), make([]byte, 12)
	for i := range key {
		key[i] = byte(i + 1)
	}
	for i := range salt {
		salt[i] = byte(0xa0 + i)
	}
	for _, mode := range []string{"pion", "pion-cryptex"} {
		b.Run(mode, func(b *testing.B) {
			var opts []srtp.ContextOption
			if mode == "pion-cryptex" {
				opts = append(opts, srtp.Cryptex(srtp.CryptexModeEnabled))
			}
			ctx, err := srtp.CreateContext(key, salt, srtp.ProtectionProfileAeadAes256Gcm, opts...)
			if err != nil {
				b.Fatal(err)
			}
			h := hdr()
			plain, out := make([]byte, maxPacket), make([]byte, maxPacket)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				h.SequenceNumber++
				n, err := h.MarshalTo(plain)
				if err != nil {
					b.Fatal(err)
				}
				n += copy(plain[n:], payload)
				if _, err := ctx.EncryptRTP(out[:0], plain[:n], h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("gcm", func(b *testing.B) {
		blk, err := aes.NewCipher(srtpKDF(key, salt, 0x00, len(key))) // the session key
		if err != nil {
			b.Fatal(err)
		}
		ssalt := srtpKDF(key, salt, 0x02, 12) // the session salt
		g, err := cipher.NewGCM(blk)
		if err != nil {
			b.Fatal(err)
		}
		h := hdr()
		out := make([]byte, maxPacket)
		var iv [12]byte
		seal := func() []byte {
			n, err := h.MarshalTo(out)
			if err != nil {
				b.Fatal(err)
			}
			// The nonce: SSRC, rollover counter (0 here) and sequence number, XORed with the
			// session salt (RFC 7714, 8.1).
			copy(iv[:], ssalt)
			binary.BigEndian.PutUint32(iv[2:], binary.BigEndian.Uint32(iv[2:])^h.SSRC)
			binary.BigEndian.PutUint16(iv[10:], binary.BigEndian.Uint16(iv[10:])^h.SequenceNumber)
			copy(out[n:], payload)
			return g.Seal(out[:n], iv[:], out[n:n+len(payload)], out[:n])
		}
		// The same work as pion's: the same bytes for the same packet.
		ctx, err := srtp.CreateContext(key, salt, srtp.ProtectionProfileAeadAes256Gcm)
		if err != nil {
			b.Fatal(err)
		}
		plain, err := h.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		want, err := ctx.EncryptRTP(nil, append(plain, payload...), h)
		if err != nil {
			b.Fatal(err)
		}
		if got := seal(); string(got) != string(want) {
			b.Fatal("the bare cipher's packet differs from pion's")
		}
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		for b.Loop() {
			h.SequenceNumber++
			seal()
		}
	})
}

// srtpKDF is SRTP's key derivation (RFC 3711, 4.3.1, with a key derivation rate of 0, as
// RFC 7714 uses it): AES in counter mode under the master key, from the master salt with
// the label in its eighth byte.
func srtpKDF(masterKey, masterSalt []byte, label byte, n int) []byte {
	blk, err := aes.NewCipher(masterKey)
	if err != nil {
		panic(err)
	}
	iv := make([]byte, aes.BlockSize)
	copy(iv, masterSalt)
	iv[7] ^= label
	out := make([]byte, n)
	cipher.NewCTR(blk, iv).XORKeyStream(out, out)
	return out
}
