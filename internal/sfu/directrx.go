package sfu

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/bedside/bedside/internal/rawudp"
)

// The direct receive path (design decision 51). A publisher's packet went from the SFU's
// socket through pion's UDP mux, the ICE connection, the DTLS/SRTP demultiplexer and the
// SRTP session to the track's reader: four goroutines, each handing the packet to the next
// through a buffer. Once a pub connection is up, the SFU's socket reader (the goroutine of
// pion's UDP mux, reading through rxConn) decrypts the publisher's media packets itself,
// with an SRTP context of its own made from the same DTLS keying material (derived as the
// direct send path does: the SFU is the DTLS server of its pub connections too), and puts
// them straight into the stream's queue, which the only interceptor of the pub connection
// reads for the track's reader. The feedback to the publisher (transport-wide, NACKs,
// receiver reports) is recorded on the way into the queue (rxfeedback.go, decision 64).
//
// A packet is found its connection by its SSRC (streams pion has bound), not by the address
// it came from: a browser may send on any candidate pair that passed its checks, not only
// the one pion calls selected (Chromium in the browser tests sends from two). It is taken
// only if it authenticates with that connection's key, which only that publisher has; so an
// SSRC that two publishers happen to use, or a forged one, can only make a stream fall back
// to pion.
//
// What the path does not take stays with pion: STUN, DTLS, RTCP, streams pion has not
// bound yet (a new SSRC: pion reads its first packets to learn its rid), and a stream whose
// packets our context cannot authenticate from the start (its rollover counter moved on
// before we took it: after rxFailLimit failures in a row, before any packet of the stream
// authenticated here, it goes back to pion for good; later failures are forgeries or
// damage, left to pion to drop, and the stream stays). A replayed packet
// (the same replay window as pion's session) is dropped, as pion would. pion's SRTP stream
// of a taken SSRC is still read (the pump): packets that were already on their way through
// pion when the path took the stream come out there, into the same queue.

// rxQueue is a stream's queue between the socket reader and the track's reader: more
// than a second of the top layer.
const rxQueue = 512

// rxFailLimit: authentication failures in a row after which a stream goes back to pion.
const rxFailLimit = 8

// rxReplayWindow is pion's SRTP session's replay window, which the path keeps.
const rxReplayWindow = 64

type rxBuf struct {
	n int
	b [maxPacket]byte
}

var rxPool = sync.Pool{New: func() any { return new(rxBuf) }}

// rxConn is the SFU's socket as pion's UDP mux reads it: media from publishers whose
// direct receive path is up is taken on the way. It reads with rawudp (recvmmsg, 16
// datagrams a call, no scheduler system-call state: docs/benchmarks.md, "System calls
// and sysmon"); what it does not take is copied into the mux's buffer.
type rxConn struct {
	*net.UDPConn
	rd     *rawudp.BatchReader                  // used by the mux's one reading goroutine
	sock   *rawudp.Socket                       // what pion writes goes by sendto(2) directly
	send   sync.Pool                            // of *rawudp.Sender: pion writes from several goroutines
	mu     sync.Mutex                           // serialises changes of routes
	routes atomic.Pointer[map[uint32]*directRx] // by SSRC
	// rtcp routes subscribers' RTCP to their sub connection's direct path by the address it
	// comes from (decision 55, direct.go). Copy-on-write, written under mu.
	rtcp atomic.Pointer[map[netip.AddrPort]*directTx]
}

// rxBatch is how many datagrams one read of the SFU's socket returns at most; rxMTU the
// largest datagram (pion's ICE reads as much).
const (
	rxBatch = 16
	rxMTU   = 8192
)

func newRxConn(udp *net.UDPConn) (*rxConn, error) {
	rd, err := rawudp.NewBatchReader(udp, rxBatch, rxMTU, 0)
	if err != nil {
		return nil, err
	}
	sock, err := rawudp.NewSocket(udp)
	if err != nil {
		return nil, err
	}
	c := &rxConn{UDPConn: udp, rd: rd, sock: sock}
	c.routes.Store(&map[uint32]*directRx{})
	c.rtcp.Store(&map[netip.AddrPort]*directTx{})
	rd.Take = c.take
	return c, nil
}

// take is offered every datagram read: an RTP packet (version 2; not RTCP, whose packet
// types 192..223 are where RTP has marker and type) of a routed SSRC goes to its path, an
// RTCP packet from a routed address to its sub connection's.
func (c *rxConn) take(b []byte, _ int, from netip.AddrPort) bool {
	if len(b) < 8 || b[0]&0xc0 != 0x80 {
		return false
	}
	if b[1] >= 192 && b[1] <= 223 {
		m := *c.rtcp.Load()
		if len(m) == 0 {
			return false
		}
		t := m[netip.AddrPortFrom(from.Addr().Unmap(), from.Port())]
		return t != nil && t.takeRTCP(b)
	}
	if len(b) < 12 {
		return false
	}
	rx := (*c.routes.Load())[binary.BigEndian.Uint32(b[8:12])]
	return rx != nil && rx.take(b)
}

// routeRTCP moves t's RTCP route from the address old to to (either may be the zero
// address: none).
func (c *rxConn) routeRTCP(to, old netip.AddrPort, t *directTx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	editMap(&c.rtcp, func(m map[netip.AddrPort]*directTx) {
		if old.IsValid() && m[old] == t {
			delete(m, old)
		}
		if to.IsValid() {
			m[to] = t
		}
	})
}

// ReadFromAddrPort is what pion's UDP mux reads with (ice.AddrPortReaderWriter).
func (c *rxConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	d, _, from, err := c.rd.Read()
	if err != nil {
		return 0, from, err
	}
	// Truncated as a socket read would (pion's buffer is rxMTU bytes too): an error here
	// would end the mux's read loop, and with it every connection.
	return copy(b, d), from, nil
}

// WriteToAddrPort is what pion's UDP mux writes with (STUN, DTLS, and RTP and RTCP not on
// the direct paths). It writes with rawudp, as the direct paths do: a system call the
// scheduler is not told about, which does not wake Go's sysmon from its sleep (decision
// 61). Such a sendto(2) does not wait: when the socket's send buffer is full (a burst of
// fan-outs) it fails, and then the write goes by net, which waits for room, as pion
// expects (a DTLS flight that fails to be written fails the handshake).
func (c *rxConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	s, _ := c.send.Get().(*rawudp.Sender)
	if s == nil {
		s = rawudp.NewSender()
	}
	err := s.Send(c.sock, b, addr)
	c.send.Put(s)
	if errors.Is(err, syscall.EAGAIN) {
		return c.WriteToUDPAddrPort(b, addr)
	}
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *rxConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if a, ok := addr.(*net.UDPAddr); ok {
		return c.WriteToAddrPort(b, a.AddrPort())
	}
	return c.UDPConn.WriteTo(b, addr)
}

func (c *rxConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// route sends the packets of an SSRC to rx (the last to bind it), or (rx nil) stops
// sending those of old; all of old's when ssrc is 0 and rx nil.
func (c *rxConn) route(ssrc uint32, rx, old *directRx) {
	c.mu.Lock()
	defer c.mu.Unlock()
	editMap(&c.routes, func(m map[uint32]*directRx) {
		for k, r := range m {
			if r == old && (ssrc == 0 || k == ssrc) {
				delete(m, k)
			}
		}
		if rx != nil {
			m[ssrc] = rx
		}
	})
}

// directRx is one pub connection's direct receive path.
type directRx struct {
	conn *rxConn // nil in unit tests only: nothing is routed to the path
	m    *Metrics
	keys dtlsSecrets

	mu      sync.Mutex // serialises changes of streams and the path's set-up
	state   atomic.Int32
	cryptex cryptexMode // from our answer: what pion accepts
	streams atomic.Pointer[map[uint32]*rxStream]
	ctx     *srtp.Context // used by the socket reader alone, once state is directReady
	hdr     rtp.Header    // the socket reader's, for ctx
	taken   atomic.Int64  // packets taken (Stats, tests)
	pumped  atomic.Int64  // packets of bound streams that came through pion (Stats, tests)
	pumps   sync.WaitGroup
	fb      *rxFeedback // the receive side: what the publisher is told of what arrived
}

// rxStream is one incoming SSRC.
type rxStream struct {
	q      chan *rxBuf
	done   chan struct{} // closed when pion's stream has ended
	fails  int           // authentication failures in a row before authed (the socket reader's)
	authed bool          // a packet of the stream has authenticated here (the socket reader's)
	pion   atomic.Bool   // back to pion's path for good
	stats  *rxStats      // what the feedback to the publisher records of it (rx.fb's)
}

func newDirectRx(conn *rxConn, m *Metrics) *directRx {
	rx := &directRx{conn: conn, m: m, fb: newRxFeedback(m)}
	rx.streams.Store(&map[uint32]*rxStream{})
	return rx
}

// attach follows the pub connection: the path starts when DTLS is up and ends with it.
// The callback comes from pion's goroutine and calls nothing of pion's.
func (rx *directRx) attach(pc *webrtc.PeerConnection) {
	if rx.conn == nil {
		return
	}
	pc.SCTP().Transport().OnStateChange(func(s webrtc.DTLSTransportState) {
		switch s {
		case webrtc.DTLSTransportStateConnected:
			rx.start()
		case webrtc.DTLSTransportStateClosed, webrtc.DTLSTransportStateFailed:
			rx.stop()
		}
	})
}

// start makes the SRTP context; the streams' packets are taken from then on.
func (rx *directRx) start() {
	rx.mu.Lock()
	defer rx.mu.Unlock()
	if rx.state.Load() != directUnknown {
		return
	}
	// Replay protection as pion's SRTP session has it (a window of 64 packets).
	ctx, err := rx.keys.context(&rx.cryptex, true, srtp.SRTPReplayProtection(rxReplayWindow))
	if err != nil {
		rx.state.Store(directDisabled)
		rx.m.receivePath.WithLabelValues("pion").Inc()
		return
	}
	rx.ctx = ctx
	rx.state.Store(directReady)
	rx.m.receivePath.WithLabelValues("direct").Inc()
}

// stop ends the path: nothing more is taken, the routes go.
func (rx *directRx) stop() {
	rx.mu.Lock()
	defer rx.mu.Unlock()
	rx.state.Store(directClosed)
	if rx.conn != nil {
		rx.conn.route(0, nil, rx)
	}
}

// take decrypts a packet from the publisher into its stream's queue, if the path has
// that stream; false leaves the packet to pion. Called by the socket reader only.
func (rx *directRx) take(b []byte) bool {
	if rx.state.Load() != directReady {
		return false
	}
	st := (*rx.streams.Load())[binary.BigEndian.Uint32(b[8:12])]
	if st == nil || st.pion.Load() {
		return false
	}
	if len(b) > maxPacket {
		// No media packet is this large (pion's receive MTU is 1460): neither path
		// could give it to the reader, whose buffer is maxPacket bytes.
		rx.m.dropReceiveQueue.Inc()
		return true
	}
	buf := rxPool.Get().(*rxBuf)
	out, err := rx.ctx.DecryptRTP(buf.b[:0], b, &rx.hdr)
	if err == nil && (len(out) > 0 && &out[0] != &buf.b[0]) {
		err = io.ErrShortBuffer // cannot happen: decrypted is never longer than encrypted
	}
	if err != nil {
		rxPool.Put(buf)
		if !errors.Is(err, srtp.ErrFailedToVerifyAuthTag) {
			return true // a replay, or malformed: pion would drop it too
		}
		// Before the stream's first packet authenticated here: perhaps a rollover
		// counter that moved on before the path took the stream (pion's context knows
		// it), or a forgery; pion decides, and after rxFailLimit in a row has the stream.
		// After it, our context follows the stream as well as pion's would: a failure is
		// a forgery or damage, and leaves the stream here (a forger who knows the SSRC
		// cannot push it to the slower path).
		if !st.authed {
			if st.fails++; st.fails >= rxFailLimit {
				st.pion.Store(true)
			}
		}
		return false
	}
	st.fails, st.authed = 0, true
	buf.n = len(out)
	rx.fb.arrived(st.stats, out, monotime())
	select {
	case st.q <- buf:
		rx.taken.Add(1)
	default:
		rxPool.Put(buf)
		rx.m.dropReceiveQueue.Inc()
	}
	return true
}

// bind gives an incoming stream its queue: the reader the track's reader reads through
// pion (there are no interceptors above it: decision 64). pion's own stream (next) is
// pumped into the same queue until it ends, which ends the reader. Every packet put in the
// queue, by either, is recorded for the feedback to the publisher.
func (rx *directRx) bind(info *interceptor.StreamInfo, next interceptor.RTPReader) interceptor.RTPReader {
	ssrc := info.SSRC
	st := &rxStream{q: make(chan *rxBuf, rxQueue), done: make(chan struct{}), stats: rx.fb.bind(info)}
	rx.mu.Lock()
	editMap(&rx.streams, func(m map[uint32]*rxStream) { m[ssrc] = st })
	if rx.conn != nil && rx.state.Load() != directClosed {
		rx.conn.route(ssrc, rx, nil)
	}
	rx.mu.Unlock()

	rx.pumps.Add(1)
	go func() { // ends when pion's stream does (its connection closes or the receiver stops)
		defer rx.pumps.Done()
		defer close(st.done)
		for {
			buf := rxPool.Get().(*rxBuf)
			n, _, err := next.Read(buf.b[:], nil)
			if err != nil {
				rxPool.Put(buf)
				return
			}
			buf.n = n
			rx.pumped.Add(1)
			rx.fb.arrived(st.stats, buf.b[:n], monotime())
			select {
			case st.q <- buf:
			default:
				rxPool.Put(buf)
				rx.m.dropReceiveQueue.Inc()
			}
		}
	}()

	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		var buf *rxBuf
		select {
		case buf = <-st.q:
		case <-st.done:
			select {
			case buf = <-st.q:
			default:
				return 0, nil, io.EOF
			}
		}
		n := copy(b, buf.b[:buf.n])
		short := n < buf.n
		rxPool.Put(buf)
		if short {
			return 0, nil, io.ErrShortBuffer
		}
		return n, a, nil
	})
}

// unbind forgets a stream (its packets go to pion, which has no reader for them any more).
func (rx *directRx) unbind(ssrc uint32) {
	rx.mu.Lock()
	defer rx.mu.Unlock()
	if _, ok := (*rx.streams.Load())[ssrc]; !ok {
		return
	}
	editMap(&rx.streams, func(m map[uint32]*rxStream) { delete(m, ssrc) })
	rx.fb.unbind(ssrc)
	if rx.conn != nil {
		rx.conn.route(ssrc, nil, rx)
	}
}

// wait waits for the pumps (after the connection has closed).
func (rx *directRx) wait() { rx.pumps.Wait() }

// rxInterceptor puts a pub connection's directRx under pion's track reader: the only
// interceptor of a pub connection.
type rxInterceptor struct {
	interceptor.NoOp
	rx *directRx
}

func (i *rxInterceptor) NewInterceptor(string) (interceptor.Interceptor, error) { return i, nil }

func (i *rxInterceptor) BindRemoteStream(info *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	return i.rx.bind(info, reader)
}

func (i *rxInterceptor) UnbindRemoteStream(info *interceptor.StreamInfo) { i.rx.unbind(info.SSRC) }
