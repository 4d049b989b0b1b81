package sfu

import (
	"sync"

	"github.com/pion/interceptor"
)

// attrLender is an interceptor (factory) on the publishing side, registered first so that
// it is the innermost reader of every incoming stream: it lends each read an attributes
// map, one per stream, emptied before each read. pion's track reader passes none, and the
// first interceptor that needs one (the NACK generator, the receiver reports, the
// transport-wide feedback) would make one per received packet, a third of a kilobyte
// (docs/benchmarks.md). What the interceptors keep is the RTP header they parse into it,
// not the map; the map goes back to our reader, which ignores it, and is reused at the
// stream's next read. A read that overlaps another on the same stream (pion reads a new
// simulcast stream itself until it knows its rid, then hands it to us; never both at once,
// but nothing here relies on that) gets no map and pion makes one as before.
type attrLender struct {
	interceptor.NoOp
}

func (l *attrLender) NewInterceptor(string) (interceptor.Interceptor, error) { return l, nil }

func (l *attrLender) BindRemoteStream(_ *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	var (
		mu    sync.Mutex
		attrs = make(interceptor.Attributes, 2)
	)
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		if a != nil || !mu.TryLock() {
			return reader.Read(b, a)
		}
		defer mu.Unlock()
		clear(attrs)
		return reader.Read(b, attrs)
	})
}
