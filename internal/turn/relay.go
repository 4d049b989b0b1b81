package turn

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	pionturn "github.com/pion/turn/v5"
	"golang.org/x/time/rate"

	"github.com/bedside/bedside/internal/rawudp"
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
	var fast *udpRelay
	if udp, ok := pc.(*net.UDPConn); ok {
		udp.SetReadBuffer(1 << 20)
		udp.SetWriteBuffer(1 << 20)
		if fast, err = newUDPRelay(udp); err != nil {
			pc.Close()
			g.s.release(rc)
			return nil, nil, err
		}
	}
	if !rc.attach(pc, nil, fast) { // revoked meanwhile
		pc.Close()
		return nil, nil, ErrRevoked
	}
	if fast != nil {
		fast.rd.Take = rc.take
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
	if !rc.attach(nil, ln, nil) {
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
	s.forgetRelay(rc)
	if set := s.relays[rc.user]; set[rc] {
		delete(set, rc)
		if len(set) == 0 {
			delete(s.relays, rc.user)
		}
		s.total--
	}
}

// Relay sockets are read in batches of up to relayBatch datagrams (a video frame arrives
// as a burst), into buffers of relayMTU bytes as pion's are. There is one relay socket per
// allocation, so the batch is kept smaller than the listeners'.
const (
	relayBatch = 8
	relayMTU   = 1600
)

// udpRelay is what the fast path needs of a UDP relay socket: the socket itself, its port,
// the batched reader that pion's read loop uses (through relayConn.ReadFrom), and that
// loop's sender, to send to the client.
type udpRelay struct {
	udp  *net.UDPConn
	sock *rawudp.Socket
	port int
	rd   *rawudp.BatchReader
	snd  *rawudp.Sender
}

func newUDPRelay(udp *net.UDPConn) (*udpRelay, error) {
	rd, err := rawudp.NewBatchReader(udp, relayBatch, relayMTU, 4) // 4: room for the ChannelData header
	if err != nil {
		return nil, err
	}
	sock, err := rawudp.NewSocket(udp)
	if err != nil {
		return nil, err
	}
	return &udpRelay{udp: udp, sock: sock, port: udp.LocalAddr().(*net.UDPAddr).Port, rd: rd, snd: rawudp.NewSender()}, nil
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

	// The fast path's state (channels.go). fast is set by attach and never changes; client,
	// clientConn and chans are set under s.mu, client and clientConn (by allocationCreated)
	// before the first channel list is stored (channelCreated), and read by the fast path
	// only after loading a non-nil channel list. dead is set first thing in Close: the fast
	// path stops relaying for this allocation at once, before the socket is even closed.
	fast       *udpRelay // nil: a TCP allocation
	chans      atomic.Pointer[[]boundChannel]
	client     netip.AddrPort
	clientConn *rawudp.Socket
	dead       atomic.Bool

	// mu guards pc and ln until they are attached (Revoke may run meanwhile), closed, and
	// conns: the TCP data connections of a TCP allocation.
	mu     sync.Mutex
	closed bool
	conns  []net.Conn
}

// attach gives the relay its socket, unless it was closed (revoked) meanwhile. A UDP relay
// socket is registered by port for the fast path's events (s.mu, then c.mu: Close takes
// them one after the other, so either attach fails or release sees the entry).
func (c *relayConn) attach(pc net.PacketConn, ln net.Listener, fast *udpRelay) bool {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.pc, c.ln, c.fast = pc, ln, fast
	if fast != nil {
		c.s.byPort[fast.port] = c
	}
	return true
}

// ReadFrom is pion's read loop on the relay socket. Datagrams from the peer of a bound
// channel go to the client here (the fast path) and the loop reads on; the others (Data
// indications, or no permission) are handed to pion.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.fast == nil {
		return c.readSlow(p)
	}
	b, _, from, err := c.fast.rd.Read()
	if err != nil {
		return 0, nil, err
	}
	return copy(p, b), net.UDPAddrFromAddrPort(from), nil
}

// take is the reader's fast path: it drops datagrams over the bandwidth limit, counts the
// others, and relays those from a channel's peer to the client.
func (c *relayConn) take(b []byte, i int, from netip.AddrPort) bool {
	if c.dead.Load() {
		return true // closing: the rest of the batch is dropped
	}
	if c.in != nil && !c.in.AllowN(time.Now(), len(b)) {
		return true // over the limit: dropped
	}
	c.packets.Add(1)
	return c.toClient(b, i, from)
}

func (c *relayConn) readSlow(p []byte) (int, net.Addr, error) {
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

// toPeer is the fast path's WriteTo: the data of a client's ChannelData to the channel's
// peer.
func (c *relayConn) toPeer(p []byte, peer netip.AddrPort, snd *rawudp.Sender) {
	if c.dead.Load() {
		return // closing (revoked): dropped
	}
	if c.out != nil && !c.out.AllowN(time.Now(), len(p)) {
		return // over the limit: dropped
	}
	c.packets.Add(1)
	snd.Send(c.fast.sock, p, peer)
}

func (c *relayConn) LocalAddr() net.Addr                { return c.pc.LocalAddr() }
func (c *relayConn) SetDeadline(t time.Time) error      { return c.pc.SetDeadline(t) }
func (c *relayConn) SetReadDeadline(t time.Time) error  { return c.pc.SetReadDeadline(t) }
func (c *relayConn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

// Close closes the socket (pion then deletes the allocation) and releases its quota.
func (c *relayConn) Close() error {
	var err error
	c.once.Do(func() {
		c.dead.Store(true)
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
