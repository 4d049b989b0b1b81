package turn

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	pionturn "github.com/pion/turn/v5"
	"golang.org/x/time/rate"
)

var (
	errQuota       = errors.New("allocation quota reached")
	errTCPRelayOff = errors.New("TCP relaying is off")
	errPeerDenied  = errors.New("peer address denied by policy")
	errClosing     = errors.New("turn server closing")
)

// relayGen hands pion its relay sockets, wrapped: each knows its participant (so Revoke can
// close them), counts towards the quotas, carries the bandwidth limit and counts packets.
type relayGen struct {
	s     *Server
	inner *pionturn.RelayAddressGeneratorPortRange
}

func (g *relayGen) Validate() error { return g.inner.Validate() }

func (g *relayGen) AllocatePacketConn(conf pionturn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	rc, err := g.s.reserve(conf.UserID)
	if err != nil {
		return nil, nil, err
	}
	var pc net.PacketConn
	var addr net.Addr
	g.s.cfg.Sockets(func() { pc, addr, err = g.inner.AllocatePacketConn(conf) })
	if err != nil {
		g.s.release(rc)
		return nil, nil, err
	}
	if udp, ok := pc.(*net.UDPConn); ok {
		udp.SetReadBuffer(1 << 20)
		udp.SetWriteBuffer(1 << 20)
	}
	if !rc.attach(pc, nil) { // revoked meanwhile
		pc.Close()
		return nil, nil, ErrRevoked
	}
	return rc, addr, nil
}

func (g *relayGen) AllocateListener(conf pionturn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	if !g.s.cfg.TCPRelay {
		return nil, nil, errTCPRelayOff
	}
	rc, err := g.s.reserve(conf.UserID)
	if err != nil {
		return nil, nil, err
	}
	var ln net.Listener
	var addr net.Addr
	g.s.cfg.Sockets(func() { ln, addr, err = g.inner.AllocateListener(conf) })
	if err != nil {
		g.s.release(rc)
		return nil, nil, err
	}
	if !rc.attach(nil, ln) {
		ln.Close()
		return nil, nil, ErrRevoked
	}
	return &relayListener{Listener: ln, rc: rc}, addr, nil
}

func (g *relayGen) AllocateConn(conf pionturn.AllocateConnConfig) (net.Conn, error) {
	if !g.s.cfg.TCPRelay {
		return nil, errTCPRelayOff
	}
	// pion checked the PermissionHandler already; check again at the last moment.
	if ta, ok := conf.RemoteAddr.(*net.TCPAddr); !ok || !g.s.policy.Allowed(nil, ta.IP) {
		return nil, errPeerDenied
	}
	var c net.Conn
	var err error
	g.s.cfg.Sockets(func() { c, err = g.inner.AllocateConn(conf) })
	if err != nil {
		return nil, err
	}
	return g.s.trackConn(conf.UserID, c), nil
}

// reserve counts a new allocation of user against the quotas.
func (s *Server) reserve(user string) (*relayConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosing
	}
	if len(s.relays[user]) >= s.cfg.QuotaPerUser || s.total >= s.cfg.QuotaTotal {
		return nil, errQuota
	}
	cnt := s.counts[user]
	if cnt == nil {
		if len(s.counts) > 10000 { // forget users with nothing open
			for u := range s.counts {
				if len(s.relays[u]) == 0 {
					delete(s.counts, u)
				}
			}
		}
		cnt = &atomic.Uint64{}
		s.counts[user] = cnt
	}
	rc := &relayConn{s: s, user: user, packets: cnt}
	if kbps := s.cfg.BandwidthKbps; kbps > 0 {
		bps := float64(kbps) * 1000 / 8
		burst := max(int(bps/4), 64<<10) // a quarter second, at least a video key frame
		rc.in = rate.NewLimiter(rate.Limit(bps), burst)
		rc.out = rate.NewLimiter(rate.Limit(bps), burst)
	}
	set := s.relays[user]
	if set == nil {
		set = map[*relayConn]bool{}
		s.relays[user] = set
	}
	set[rc] = true
	s.total++
	return rc, nil
}

func (s *Server) release(rc *relayConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if set := s.relays[rc.user]; set[rc] {
		delete(set, rc)
		if len(set) == 0 {
			delete(s.relays, rc.user)
		}
		s.total--
	}
}

// relayConn is one allocation's relay socket (UDP), or the listener of a TCP allocation.
// Packets over the bandwidth limit are dropped, as a congested link would.
type relayConn struct {
	s       *Server
	user    string
	pc      net.PacketConn
	ln      net.Listener
	in, out *rate.Limiter  // peer -> client, client -> peer; nil = unlimited
	packets *atomic.Uint64 // shared by the user's allocations
	once    sync.Once
	// mu guards pc and ln until they are attached (Revoke may run meanwhile), closed, and
	// conns: the TCP data connections of a TCP allocation.
	mu     sync.Mutex
	closed bool
	conns  []net.Conn
}

// attach gives the relay its socket, unless it was closed (revoked) meanwhile.
func (c *relayConn) attach(pc net.PacketConn, ln net.Listener) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.pc, c.ln = pc, ln
	return true
}

func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.pc.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		if c.in != nil && !c.in.AllowN(time.Now(), n) {
			continue // over the limit: dropped
		}
		c.packets.Add(1)
		return n, addr, nil
	}
}

func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !c.s.policy.PortAllowed(addr) {
		return len(p), nil // an allowed host's other port: dropped
	}
	if c.out != nil && !c.out.AllowN(time.Now(), len(p)) {
		return len(p), nil // over the limit: dropped
	}
	c.packets.Add(1)
	return c.pc.WriteTo(p, addr)
}

func (c *relayConn) LocalAddr() net.Addr                { return c.pc.LocalAddr() }
func (c *relayConn) SetDeadline(t time.Time) error      { return c.pc.SetDeadline(t) }
func (c *relayConn) SetReadDeadline(t time.Time) error  { return c.pc.SetReadDeadline(t) }
func (c *relayConn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

// Close closes the socket (pion then deletes the allocation) and releases its quota.
func (c *relayConn) Close() error {
	var err error
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		pc, ln, conns := c.pc, c.ln, c.conns
		c.mu.Unlock()
		if pc != nil {
			err = pc.Close()
		}
		if ln != nil {
			err = ln.Close()
		}
		for _, tc := range conns {
			tc.Close()
		}
		c.s.release(c)
	})
	return err
}

// revoke closes the allocation now: its read loop ends and pion deletes it.
func (c *relayConn) revoke() { c.Close() }

// relayListener is the listener of a TCP allocation; its accepted peer connections are
// closed with it.
type relayListener struct {
	net.Listener
	rc *relayConn
}

func (l *relayListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.rc.mu.Lock()
	l.rc.conns = append(l.rc.conns, c)
	l.rc.mu.Unlock()
	return c, nil
}

func (l *relayListener) Close() error { return l.rc.Close() }

// trackConn attaches an outgoing TCP peer connection to one of user's TCP allocations, so
// that Revoke closes it too.
func (s *Server) trackConn(user string, c net.Conn) net.Conn {
	s.mu.Lock()
	var owner *relayConn
	for rc := range s.relays[user] {
		if rc.ln != nil {
			owner = rc
			break
		}
	}
	s.mu.Unlock()
	if owner != nil {
		owner.mu.Lock()
		owner.conns = append(owner.conns, c)
		owner.mu.Unlock()
	}
	return c
}
