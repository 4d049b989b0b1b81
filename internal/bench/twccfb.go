package bench

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
)

// Transport-wide congestion control feedback (the SFU's bandwidth estimate for each
// subscriber comes from it) with the kernel's receive times. pion's own feedback
// interceptor stamps a packet's arrival when the application's reader gets to it; in the
// bench one CPU serves every load client, so that time carries the load tool's queueing
// (milliseconds at the tail), which the SFU's delay-based estimator would read as
// congestion on the path and answer by lowering layers. A browser stamps arrivals in its
// network thread at the socket; this does the same with SO_TIMESTAMPNS (tsconn.go).

// twccFeedback is the interceptor factory; one interceptor per peer connection.
type twccFeedback struct {
	stamps *rxStamps
}

func (f *twccFeedback) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &twccFeedbackInterceptor{stamps: f.stamps, start: time.Now(), close: make(chan struct{})}, nil
}

type twccFeedbackInterceptor struct {
	interceptor.NoOp
	stamps *rxStamps
	start  time.Time

	mu       sync.Mutex
	recorder *twcc.Recorder
	close    chan struct{}
	closed   bool
	wg       sync.WaitGroup
}

// BindRTCPWriter starts the loop that sends feedback every 100 ms (pion's interval).
func (t *twccFeedbackInterceptor) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recorder = twcc.NewRecorder(rand.Uint32())
	if t.closed {
		return w
	}
	t.wg.Add(1)
	go t.loop(w) // ends at Close
	return w
}

func (t *twccFeedbackInterceptor) loop(w interceptor.RTCPWriter) {
	defer t.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.close:
			return
		case <-tick.C:
			t.mu.Lock()
			pkts := t.recorder.BuildFeedbackPacket()
			t.mu.Unlock()
			if len(pkts) > 0 {
				w.Write(pkts, nil)
			}
		}
	}
}

// BindRemoteStream records every incoming packet's transport-wide sequence number with its
// socket receive time (the read time when the socket did not give one).
func (t *twccFeedbackInterceptor) BindRemoteStream(info *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	var id uint8
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == sdp.TransportCCURI {
			id = uint8(e.ID)
		}
	}
	if id == 0 {
		return r
	}
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, a, err := r.Read(b, a)
		if err != nil {
			return n, a, err
		}
		if a == nil {
			a = interceptor.Attributes{}
		}
		h, err := a.GetRTPHeader(b[:n])
		if err != nil {
			return n, a, nil
		}
		ext := h.GetExtension(id)
		if ext == nil {
			return n, a, nil
		}
		var tcc rtp.TransportCCExtension
		if tcc.Unmarshal(ext) != nil {
			return n, a, nil
		}
		at, ok := t.stamps.peek(h.SSRC, h.SequenceNumber)
		if !ok {
			at = now()
		}
		t.mu.Lock()
		if t.recorder != nil {
			t.recorder.Record(info.SSRC, tcc.TransportSequence, (at-t.start.UnixNano())/1000)
		}
		t.mu.Unlock()
		return n, a, nil
	})
}

func (t *twccFeedbackInterceptor) Close() error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.close)
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}
