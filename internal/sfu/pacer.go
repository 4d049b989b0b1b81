package sfu

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
)

// pacer is the bandwidth estimator's pacer on a subscriber's connection: it sends at once
// (the layer choice keeps the rate under the estimate, and audio must not wait behind
// video), like pion's NoOpPacer, with two differences. Its writers are a copy-on-write
// map read without a lock, so the down tracks' writers never contend; and a stream is
// forgotten when its sender stops (pion's cc interceptor never tells its pacer, so on a
// long-lived connection whose tracks come and go every old sender's writer chain would be
// kept for ever). pacerUnbinder, registered beside the estimator, does the forgetting.
//
// It also lends every write an attributes map: pion's track writer passes none, and the
// estimator's writer below would make one per packet to record the transport-wide sequence
// number's extension id (a fifth of what the server allocated per forwarded packet,
// docs/benchmarks.md). Nothing below the pacer keeps the map once its Write returns.
type pacer struct {
	mu      sync.Mutex // serialises changes of writers
	writers atomic.Pointer[map[uint32]interceptor.RTPWriter]
	attrs   sync.Pool // of interceptor.Attributes, empty when in the pool
}

func newPacer() *pacer {
	p := &pacer{}
	p.writers.Store(&map[uint32]interceptor.RTPWriter{})
	return p
}

func (p *pacer) AddStream(ssrc uint32, w interceptor.RTPWriter) { p.update(ssrc, w) }
func (p *pacer) remove(ssrc uint32)                             { p.update(ssrc, nil) }

func (p *pacer) update(ssrc uint32, w interceptor.RTPWriter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	editMap(&p.writers, func(m map[uint32]interceptor.RTPWriter) {
		if w == nil {
			delete(m, ssrc)
		} else {
			m[ssrc] = w
		}
	})
}

func (p *pacer) Write(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
	w, ok := (*p.writers.Load())[h.SSRC]
	if !ok {
		return 0, fmt.Errorf("sfu pacer: unknown ssrc %d", h.SSRC)
	}
	if a != nil {
		return w.Write(h, payload, a)
	}
	a, _ = p.attrs.Get().(interceptor.Attributes)
	if a == nil {
		a = make(interceptor.Attributes, 2)
	}
	n, err := w.Write(h, payload, a)
	clear(a)
	p.attrs.Put(a)
	return n, err
}

func (p *pacer) SetTargetBitrate(int) {}
func (p *pacer) Close() error         { return nil }

// pacerUnbinder is an interceptor (factory) whose only work is to make the pacer forget a
// stream whose sender stopped.
type pacerUnbinder struct {
	interceptor.NoOp
	p *pacer
}

func (u *pacerUnbinder) NewInterceptor(string) (interceptor.Interceptor, error) { return u, nil }

func (u *pacerUnbinder) UnbindLocalStream(info *interceptor.StreamInfo) { u.p.remove(info.SSRC) }
