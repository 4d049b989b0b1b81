package turn

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/stun/v4"

	"github.com/bedside/bedside/internal/rawudp"
)

// The guard looks at every TURN control request before pion does, on every listener (UDP
// datagrams, and the framed stream of TCP and TLS). It does three things pion cannot:
//
//   - it finds which of the two secrets (current, previous) signed the request, so the
//     AuthHandler returns the right key;
//   - it refuses CreatePermission, ChannelBind and Connect towards a denied peer with 403,
//     in every address form (pion answers 401 for ChannelBind and 443 for an IPv6 peer of an
//     IPv4 allocation, and checks nothing for IPv4-mapped IPv6);
//   - it refuses TCP allocations with 442 while TCP relaying is off.
//
// Only requests signed by a valid secret get such an answer; others go on to pion, which
// answers 401. ChannelData and Send indications pass without a look; ChannelData on a
// channel pion bound does not even reach pion (the fast path, channels.go).
// pion's PermissionHandler enforces the same policy behind it.

const (
	methodAllocate         = 0x003
	methodRefresh          = 0x004
	methodCreatePermission = 0x008
	methodChannelBind      = 0x009
	methodConnect          = 0x00a
	methodConnectionBind   = 0x00b
	magicCookie            = 0x2112A442
)

// isControlRequest reports whether b starts a STUN request of a TURN method that carries
// credentials (the only messages the guard reads).
func isControlRequest(b []byte) bool {
	if len(b) < 20 || b[0] != 0 || binary.BigEndian.Uint32(b[4:8]) != magicCookie {
		return false
	}
	switch b[1] {
	case methodAllocate, methodRefresh, methodCreatePermission, methodChannelBind, methodConnect, methodConnectionBind:
		return true
	}
	return false
}

// inspect returns the answer to send instead of passing b to pion, or nil.
func (s *Server) inspect(b []byte, src net.Addr) []byte {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return nil
	}
	var uname stun.Username
	var realm stun.Realm
	if uname.GetFrom(m) != nil || realm.GetFrom(m) != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return nil
	}
	idx, key := s.verify(m, uname.String(), realm.String())
	if idx < 0 {
		return nil // pion answers 401
	}
	if idx > 0 {
		if n := s.hints.Add(1); n > 10000 { // bounded: hints pion never asked for are dropped
			s.prevSecret.Clear()
			s.hints.Store(0)
		}
		s.prevSecret.Store(secretHintKey(src, uname.String()), idx)
	}
	_, user, _ := parseUsername(uname.String())
	switch m.Type.Method {
	case methodAllocate:
		if v, err := m.Get(stun.AttrRequestedTransport); err == nil && len(v) >= 1 && v[0] == 6 && !s.cfg.TCPRelay {
			s.refused(src, user, "tcp_relay_off", nil)
			return errorReply(m, stun.CodeUnsupportedTransProto, key)
		}
	case methodCreatePermission, methodChannelBind, methodConnect:
		for _, a := range m.Attributes {
			if a.Type != stun.AttrXORPeerAddress {
				continue
			}
			ip, ok := xorPeerIP(a.Value, m.TransactionID)
			if !ok {
				return nil // malformed: pion answers 400
			}
			if allowed, by := s.policy.Check(ip); !allowed {
				s.refused(src, user, "peer_denied", map[string]string{"range": by, "method": m.Type.Method.String()})
				return errorReply(m, stun.CodeForbidden, key)
			}
		}
	}
	return nil
}

// verify finds the secret whose key checks the request's MESSAGE-INTEGRITY: its index and
// the key, or -1.
func (s *Server) verify(m *stun.Message, username, realm string) (int, []byte) {
	for i, sec := range s.secrets {
		key := longTermKey(username, realm, restPassword(sec, username))
		if stun.MessageIntegrity(key).Check(m) == nil {
			return i, key
		}
	}
	return -1, nil
}

// xorPeerIP decodes the address of an XOR-PEER-ADDRESS attribute value.
func xorPeerIP(v []byte, tid [stun.TransactionIDSize]byte) (net.IP, bool) {
	if len(v) < 8 {
		return nil, false
	}
	var mask [16]byte
	binary.BigEndian.PutUint32(mask[0:4], magicCookie)
	copy(mask[4:], tid[:])
	var n int
	switch v[1] {
	case 0x01:
		n = 4
	case 0x02:
		n = 16
	default:
		return nil, false
	}
	if len(v) < 4+n {
		return nil, false
	}
	ip := make(net.IP, n)
	for i := range n {
		ip[i] = v[4+i] ^ mask[i]
	}
	return ip, true
}

func errorReply(m *stun.Message, code stun.ErrorCode, key []byte) []byte {
	r, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID), stun.NewType(m.Type.Method, stun.ClassErrorResponse),
		code, stun.MessageIntegrity(key), stun.Fingerprint)
	if err != nil {
		return nil
	}
	return r.Raw
}

// The listener sockets are read in batches of up to listenerBatch datagrams (recvmmsg),
// into buffers of listenerMTU bytes: pion's inbound MTU (it drops datagrams that fill it).
// A batch is what queued up while the loop was busy (a read returns as soon as one
// datagram is there); a larger batch only costs memory, listenerBatch * listenerMTU bytes
// per socket.
const (
	listenerBatch = 32
	listenerMTU   = 1600
)

// guardedPacketConn is a UDP listener socket with the guard in front of pion's read loop,
// and the ChannelData fast path (channels.go) in front of the guard.
type guardedPacketConn struct {
	*net.UDPConn
	rd  *rawudp.BatchReader // used only by pion's read loop, through ReadFrom
	snd *rawudp.Sender      // the same loop's, for the fast path
	s   *Server
}

// take is the reader's fast path: ChannelData on a channel the fast path knows is relayed
// here.
func (c *guardedPacketConn) take(b []byte, _ int, from netip.AddrPort) bool {
	return len(b) >= 4 && len(b) < listenerMTU && b[0]&0xc0 == 0x40 && c.s.forward(b, from, c.snd)
}

func (c *guardedPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		b, _, from, err := c.rd.Read()
		if err != nil {
			return 0, nil, err
		}
		addr := net.UDPAddrFromAddrPort(from)
		if isControlRequest(b) {
			if reply := c.s.inspect(b, addr); reply != nil {
				c.UDPConn.WriteTo(reply, addr)
				continue
			}
		}
		return copy(p, b), addr, nil
	}
}

// guardedListener puts the guard in front of each TCP or TLS connection.
type guardedListener struct {
	net.Listener
	s *Server
}

func (l *guardedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	limitUnsent(c)
	return &guardedConn{Conn: c, s: l.s, r: bufio.NewReaderSize(c, 4096)}, nil
}

// maxFrame bounds a STUN message or ChannelData frame on a stream.
const maxFrame = 65535 + 20

var errBadFrame = errors.New("turn: not a STUN or ChannelData frame")

// guardedConn reads the stream frame by frame (RFC 6062 and RFC 8656 section 12: STUN
// messages and ChannelData padded to 4 bytes), passes the ones the guard lets through, and
// answers the others itself. After a ConnectionBind (RFC 6062) the stream is peer data and
// passes untouched. What goes to the client is written as streamout.go says: media through
// a queue that drops what waited too long (decision 67).
type guardedConn struct {
	net.Conn
	s       *Server
	r       *bufio.Reader
	buf     []byte
	pending []byte
	raw     atomic.Bool // after a ConnectionBind: the stream is a TCP peer's data
	wmu     sync.Mutex

	omu    sync.Mutex
	out    *streamOut // from the first media frame on
	closed bool
}

func (c *guardedConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		if c.raw.Load() {
			return c.r.Read(p)
		}
		for {
			frame, err := c.readFrame()
			if err != nil {
				return 0, err
			}
			if isControlRequest(frame) {
				if reply := c.s.inspect(frame, c.RemoteAddr()); reply != nil {
					if _, err := c.Write(reply); err != nil {
						return 0, err
					}
					continue
				}
				if frame[1] == methodConnectionBind && c.s.cfg.TCPRelay {
					c.raw.Store(true)
				}
			}
			c.pending = frame
			break
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// Write writes one frame for the client (pion writes whole frames): media through the
// connection's queue, which it makes at the first media frame; anything else through the
// queue once there is one (so that the order holds), else at once.
func (c *guardedConn) Write(p []byte) (int, error) {
	media := !c.raw.Load() && isStreamMedia(p)
	c.omu.Lock()
	o := c.out
	if o == nil && media && !c.closed {
		o = newStreamOut(c.Conn, &c.wmu, c.s.streamDropped)
		c.out = o
	}
	c.omu.Unlock()
	if o == nil {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.Conn.Write(p)
	}
	if err := o.put(p, media); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the connection and ends its queue's goroutine.
func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.omu.Lock()
	o := c.out
	c.closed = true
	c.omu.Unlock()
	if o != nil {
		o.close()
	}
	return err
}

func (c *guardedConn) readFrame() ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return nil, err
	}
	length := int(binary.BigEndian.Uint16(hdr[2:4]))
	var total int
	switch hdr[0] >> 6 {
	case 0: // STUN
		total = 20 + length
	case 1: // ChannelData, padded to 4 on streams
		total = 4 + (length+3)&^3
	default:
		return nil, errBadFrame
	}
	if total > maxFrame {
		return nil, errBadFrame
	}
	if cap(c.buf) < total {
		c.buf = make([]byte, total)
	}
	f := c.buf[:total]
	copy(f, hdr[:])
	if _, err := io.ReadFull(c.r, f[4:]); err != nil {
		return nil, err
	}
	return f, nil
}
