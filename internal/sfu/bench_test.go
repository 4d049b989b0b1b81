package sfu

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
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
