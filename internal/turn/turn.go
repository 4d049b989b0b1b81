// Package turn is Bedside's embedded STUN/TURN relay, on pion/turn, locked down: TURN REST
// credentials (two secrets during a rotation, a server-side cap on their lifetime), a peer
// policy that never relays to reserved or internal addresses, quotas, a bandwidth limit per
// allocation, and revocation of one participant's relays within a moment. It also says which
// ICE servers each participant is given, so clients use exactly the list the server hands
// them (docs/design.md, decision 6). In external mode it only issues credentials for an
// external TURN service (coturn with use-auth-secret).
package turn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	pionturn "github.com/pion/turn/v5"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/rawudp"
)

// Realm is the TURN realm of the embedded server.
const Realm = "bedside"

// Defaults of the Config fields that have one.
const (
	DefaultTTL          = 10 * time.Minute
	DefaultTTLMax       = time.Hour
	DefaultCheckTTL     = 2 * time.Minute
	DefaultGrace        = time.Hour
	DefaultQuotaPerUser = 12
	DefaultQuotaTotal   = 1000
)

// Config configures the server. The zero value of a field means its default where one is
// named.
type Config struct {
	// Addr is the UDP (and, with TCP, TCP) listen address of STUN and TURN, e.g. ":3478".
	// "" with no External URLs: no STUN or TURN at all.
	Addr string
	// TCP: also accept TURN over TCP on Addr's port (browsers behind UDP-blocking
	// firewalls).
	TCP bool
	// STUNOnly: answer STUN on Addr (UDP) and relay nothing (TURN off).
	STUNOnly bool
	// TLSAddr: TURN over TLS (TURNS) listen address, e.g. ":5349" or ":443"; "" = none.
	TLSAddr string
	// TLS is the certificate for TLSAddr.
	TLS *tls.Config
	// UDPListeners is the number of UDP sockets bound to Addr with SO_REUSEPORT, each with its
	// own read loop, so the relay uses more than one core. 0 = GOMAXPROCS.
	UDPListeners int

	// ICEHost is the host name or address put into the URLs handed to browsers.
	ICEHost string
	// External are the TURN URLs of an external service (turn:host:3478?transport=udp,
	// turns:host:443?transport=tcp, ...). When set, no relay runs here: credentials are issued
	// for that service with Secrets.
	External []string

	// RelayIP is the address relay sockets bind to (nil: all addresses).
	RelayIP net.IP
	// PublicIP is the relay address told to clients (XOR-RELAYED-ADDRESS): the public
	// address of a server behind 1:1 NAT. nil: RelayIP, or else ICEHost when it is an
	// address, or else the address of Addr.
	PublicIP net.IP
	// MinPort and MaxPort bound the relay ports (0: 49152-65535).
	MinPort, MaxPort uint16

	// Secrets: the first issues credentials, every one (at most two) is accepted.
	Secrets [][]byte
	// TTL is the lifetime of a participant's credential (DefaultTTL); CheckTTL that of the
	// device check's (DefaultCheckTTL); TTLMax the most the server accepts (DefaultTTLMax):
	// a username whose expiry is further away is refused, whoever signed it.
	TTL, CheckTTL, TTLMax time.Duration
	// Grace is how long after its credential expired an existing allocation may still be
	// refreshed (new allocations need an unexpired credential), so a call goes on across
	// credential refreshes (DefaultGrace).
	Grace time.Duration

	// AllowPeers are peer networks relayed to despite the denied ranges.
	AllowPeers []netip.Prefix
	// AllowPeerAddrs are exact peer addresses (IP and port) relayed to despite the denied
	// ranges: the embedded SFU's, so that a client that must use the relay reaches it, and
	// nothing else on that host.
	AllowPeerAddrs []netip.AddrPort
	// TCPRelay allows RFC 6062 TCP allocations (relaying to peers over TCP).
	TCPRelay bool
	// QuotaPerUser and QuotaTotal bound concurrent allocations (486 past them).
	QuotaPerUser, QuotaTotal int
	// BandwidthKbps limits each allocation, in each direction (0: unlimited).
	BandwidthKbps int

	// Sockets, if set, runs the creation of each relay socket (tests use it to make them in
	// a network namespace, on a thread that stays there). nil: in place.
	Sockets func(create func())

	Recorder audit.Recorder // nil: audit.Discard
	Metrics  *Metrics       // nil: none
	Log      *slog.Logger
	Now      func() time.Time

	// channelLifetime is pion's channel binding lifetime (0: its 10 minutes); tests shorten
	// it to watch a channel expire.
	channelLifetime time.Duration
}

// Server is the embedded STUN/TURN server (or, in external mode, the credential issuer for
// another one). The zero Server (from Off) serves nothing and hands out no ICE servers.
type Server struct {
	cfg     Config
	log     *slog.Logger
	rec     audit.Recorder
	metrics *Metrics
	policy  *PeerPolicy
	secrets secrets
	now     func() time.Time

	srv       *pionturn.Server
	udp       []net.PacketConn
	listeners []net.Listener
	udpPort   int
	tcpPort   int
	tlsPort   int

	// prevSecret remembers, per (client address, username), that a request verified with a
	// secret other than the current one, for the AuthHandler that pion calls next.
	prevSecret sync.Map
	hints      atomic.Int64
	// streamDrops counts media frames not sent to TCP and TLS clients (streamout.go).
	streamDrops atomic.Int64

	mu      sync.Mutex
	revoked map[string]time.Time           // user -> when
	relays  map[string]map[*relayConn]bool // user -> open relay sockets
	counts  map[string]*atomic.Uint64      // user -> packets relayed, over all its allocations
	total   int                            // open allocations
	closed  bool

	// The ChannelData fast path (channels.go): UDP relay sockets by port (under mu), and
	// the UDP clients that have channels, by address (copied on write under mu, read
	// without a lock by the listeners' read loops).
	byPort   map[int]*relayConn
	clients  atomic.Pointer[map[netip.AddrPort]*relayConn]
	udpConns []*rawudp.Socket // the listener sockets, to send to clients
}

// Off is a Server that serves nothing.
func Off() *Server { return &Server{} }

// Start starts the server described by cfg (or, with cfg.External, only the credential
// issuer).
func Start(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Recorder == nil {
		cfg.Recorder = audit.Discard
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sockets == nil {
		cfg.Sockets = func(create func()) { create() }
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.CheckTTL == 0 {
		cfg.CheckTTL = DefaultCheckTTL
	}
	if cfg.TTLMax == 0 {
		cfg.TTLMax = DefaultTTLMax
	}
	if cfg.Grace == 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.QuotaPerUser == 0 {
		cfg.QuotaPerUser = DefaultQuotaPerUser
	}
	if cfg.QuotaTotal == 0 {
		cfg.QuotaTotal = DefaultQuotaTotal
	}
	if cfg.MinPort == 0 && cfg.MaxPort == 0 {
		cfg.MinPort, cfg.MaxPort = 49152, 65535
	}
	if cfg.UDPListeners <= 0 {
		cfg.UDPListeners = runtime.GOMAXPROCS(0)
	}
	if cfg.TTL > cfg.TTLMax || cfg.CheckTTL > cfg.TTLMax {
		return nil, fmt.Errorf("turn: credential lifetime %v over the cap %v", max(cfg.TTL, cfg.CheckTTL), cfg.TTLMax)
	}
	s := &Server{
		cfg: cfg, log: cfg.Log, rec: cfg.Recorder, metrics: cfg.Metrics, now: cfg.Now,
		policy:  NewPeerPolicy(cfg.AllowPeers).WithExact(cfg.AllowPeerAddrs),
		revoked: map[string]time.Time{}, relays: map[string]map[*relayConn]bool{}, counts: map[string]*atomic.Uint64{},
		byPort: map[int]*relayConn{},
	}
	for _, sec := range cfg.Secrets {
		if len(sec) > 0 {
			s.secrets = append(s.secrets, sec)
		}
	}
	if len(s.secrets) > 2 {
		return nil, errors.New("turn: at most two secrets (current and previous)")
	}
	if len(cfg.External) > 0 {
		if len(s.secrets) == 0 {
			return nil, errors.New("turn: an external TURN service needs the shared secret")
		}
		return s, nil
	}
	if cfg.Addr == "" {
		return &Server{}, nil
	}
	if cfg.STUNOnly {
		if err := s.listenSTUN(); err != nil {
			s.closeSockets()
			return nil, err
		}
		return s, nil
	}
	if len(s.secrets) == 0 {
		return nil, errors.New("turn: no secret")
	}
	if err := s.listen(); err != nil {
		s.closeSockets()
		return nil, err
	}
	return s, nil
}

// listenSTUN answers STUN binding requests on Addr and refuses every allocation (400).
func (s *Server) listenSTUN() error {
	conns, err := listenUDPGroup(s.cfg.Addr, 1)
	if err != nil {
		return fmt.Errorf("stun listen %s: %w", s.cfg.Addr, err)
	}
	pc := conns[0]
	s.udp = conns
	s.udpPort = pc.LocalAddr().(*net.UDPAddr).Port
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	srv, err := pionturn.NewServer(pionturn.ServerConfig{Realm: Realm, LoggerFactory: lf, PacketConnConfigs: []pionturn.PacketConnConfig{{PacketConn: pc}}})
	if err != nil {
		return fmt.Errorf("stun server: %w", err)
	}
	s.srv = srv
	s.log.Info("stun listening (turn off)", "udp_port", s.udpPort)
	return nil
}

// listenUDPAndTCP opens the UDP listener group on addr and, with tcp, the TCP listener on
// the same port. With port 0 the kernel chooses the UDP port, and that port may already be
// taken for TCP: then it closes the UDP sockets and tries another, a few times.
func listenUDPAndTCP(addr string, n int, tcp bool) ([]net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	tries := 1
	if tcp && port == "0" {
		tries = 20
	}
	for i := 0; ; i++ {
		conns, err := listenUDPGroup(addr, n)
		if err != nil {
			return nil, nil, fmt.Errorf("turn listen udp %s: %w", addr, err)
		}
		if !tcp {
			return conns, nil, nil
		}
		p := conns[0].LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort(hostOf(addr), strconv.Itoa(p)))
		if err == nil {
			return conns, ln, nil
		}
		for _, c := range conns {
			c.Close()
		}
		if i+1 >= tries || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("turn listen tcp %s: %w", addr, err)
		}
	}
}

// listen opens the sockets and starts pion on them.
func (s *Server) listen() error {
	cfg := s.cfg
	conns, tcpLn, err := listenUDPAndTCP(cfg.Addr, cfg.UDPListeners, cfg.TCP)
	if err != nil {
		return err
	}
	s.udp = conns
	if tcpLn != nil {
		s.listeners = append(s.listeners, tcpLn)
	}
	laddr := conns[0].LocalAddr().(*net.UDPAddr)
	s.udpPort = laddr.Port

	publicIP := cfg.PublicIP
	if publicIP == nil {
		publicIP = cfg.RelayIP
	}
	if publicIP == nil || publicIP.IsUnspecified() {
		if ip := net.ParseIP(cfg.ICEHost); ip != nil {
			publicIP = ip
		} else if !laddr.IP.IsUnspecified() {
			publicIP = laddr.IP
		} else {
			return errors.New("turn: set the public relay address (turn-public-ip): ice-host is not an address and the listener binds all addresses")
		}
	}
	bindIP := "0.0.0.0"
	if cfg.RelayIP != nil {
		bindIP = cfg.RelayIP.String()
	} else if !laddr.IP.IsUnspecified() {
		bindIP = laddr.IP.String()
	}
	gen := &relayGen{s: s, inner: &pionturn.RelayAddressGeneratorPortRange{
		RelayAddress: publicIP, Address: bindIP, MinPort: cfg.MinPort, MaxPort: cfg.MaxPort,
	}}
	if err := gen.inner.Validate(); err != nil {
		return fmt.Errorf("turn relay: %w", err)
	}

	var pcs []pionturn.PacketConnConfig
	for _, c := range s.udp {
		u := c.(*net.UDPConn)
		rd, err := rawudp.NewBatchReader(u, listenerBatch, listenerMTU, 0)
		if err != nil {
			return fmt.Errorf("turn listen udp %s: %w", cfg.Addr, err)
		}
		sock, err := rawudp.NewSocket(u)
		if err != nil {
			return fmt.Errorf("turn listen udp %s: %w", cfg.Addr, err)
		}
		s.udpConns = append(s.udpConns, sock)
		gc := &guardedPacketConn{UDPConn: u, rd: rd, snd: rawudp.NewSender(), s: s}
		rd.Take = gc.take
		pcs = append(pcs, pionturn.PacketConnConfig{PacketConn: gc, RelayAddressGenerator: gen, PermissionHandler: s.policy.Allowed})
	}
	var lns []pionturn.ListenerConfig
	if cfg.TCP {
		ln := tcpLn
		s.tcpPort = ln.Addr().(*net.TCPAddr).Port
		lns = append(lns, pionturn.ListenerConfig{Listener: &guardedListener{Listener: ln, s: s}, RelayAddressGenerator: gen, PermissionHandler: s.policy.Allowed})
	}
	if cfg.TLSAddr != "" {
		if cfg.TLS == nil {
			return errors.New("turn: TURNS needs a certificate")
		}
		ln, err := net.Listen("tcp", cfg.TLSAddr)
		if err != nil {
			return fmt.Errorf("turn listen tls %s: %w", cfg.TLSAddr, err)
		}
		s.tlsPort = ln.Addr().(*net.TCPAddr).Port
		tln := tls.NewListener(ln, cfg.TLS)
		s.listeners = append(s.listeners, tln)
		lns = append(lns, pionturn.ListenerConfig{Listener: &guardedListener{Listener: tln, s: s}, RelayAddressGenerator: gen, PermissionHandler: s.policy.Allowed})
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	srv, err := pionturn.NewServer(pionturn.ServerConfig{
		Realm:              Realm,
		AuthHandler:        s.authenticate,
		QuotaHandler:       s.quota,
		EventHandler:       s.events(),
		PacketConnConfigs:  pcs,
		ListenerConfigs:    lns,
		LoggerFactory:      lf,
		ChannelBindTimeout: cfg.channelLifetime,
	})
	if err != nil {
		return fmt.Errorf("turn server: %w", err)
	}
	s.srv = srv
	s.log.Info("turn listening", "udp_port", s.udpPort, "udp_sockets", len(s.udp), "tcp_port", s.tcpPort, "tls_port", s.tlsPort,
		"relay_ports", fmt.Sprintf("%d-%d", cfg.MinPort, cfg.MaxPort), "tcp_relay", cfg.TCPRelay)
	return nil
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return h
}

// Port is the UDP port of STUN and TURN (0 when off).
func (s *Server) Port() int { return s.udpPort }

// TCPPort is the TCP port of TURN over TCP (0 when off).
func (s *Server) TCPPort() int { return s.tcpPort }

// TLSPort is the port of TURNS (0 when off).
func (s *Server) TLSPort() int { return s.tlsPort }

// Enabled reports whether participants get relay servers (embedded or external).
func (s *Server) Enabled() bool {
	return (s.srv != nil && !s.cfg.STUNOnly) || len(s.cfg.External) > 0
}

// External reports whether the relay is an external service.
func (s *Server) External() bool { return len(s.cfg.External) > 0 }

// ICEServer is one entry of RTCConfiguration.iceServers.
type ICEServer struct {
	URLs       []string
	Username   string
	Credential string
}

// Purpose says what a credential is for, and so how long it lives.
type Purpose int

const (
	// ForCall: an admitted participant's call (Config.TTL).
	ForCall Purpose = iota
	// ForCheck: the patient's connectivity check before joining (Config.CheckTTL).
	ForCheck
	// NoRelay: STUN only (a participant still waiting).
	NoRelay
)

// ICEServers returns the ICE servers for user (a participant id, or a visit id for the
// device check) and when the credential in them expires (zero when there is none).
func (s *Server) ICEServers(user string, purpose Purpose) ([]ICEServer, time.Time) {
	var out []ICEServer
	if s.udpPort != 0 {
		out = append(out, ICEServer{URLs: []string{"stun:" + s.hostPort(s.udpPort)}})
	}
	if purpose == NoRelay || !s.Enabled() {
		if out == nil {
			out = []ICEServer{}
		}
		return out, time.Time{}
	}
	ttl := s.cfg.TTL
	if purpose == ForCheck {
		ttl = s.cfg.CheckTTL
	}
	c := s.secrets.issue(user, s.now(), ttl)
	var urls []string
	if len(s.cfg.External) > 0 {
		urls = append(urls, s.cfg.External...)
	} else {
		urls = append(urls, "turn:"+s.hostPort(s.udpPort)+"?transport=udp")
		if s.tcpPort != 0 {
			urls = append(urls, "turn:"+s.hostPort(s.tcpPort)+"?transport=tcp")
		}
		if s.tlsPort != 0 {
			urls = append(urls, "turns:"+s.hostPort(s.tlsPort)+"?transport=tcp")
		}
	}
	out = append(out, ICEServer{URLs: urls, Username: c.Username, Credential: c.Password})
	return out, c.Expires
}

func (s *Server) hostPort(port int) string {
	return net.JoinHostPort(s.cfg.ICEHost, strconv.Itoa(port))
}

// Issue returns a credential for user, for tests and tools.
func (s *Server) Issue(user string, ttl time.Duration) Credential {
	return s.secrets.issue(user, s.now(), ttl)
}

// Revoke closes every relay allocation of user at once (their packets stop) and refuses its
// credentials until Readmit. It is what happens when a participant leaves, is removed, or
// the visit ends. It reports how many allocations it closed.
func (s *Server) Revoke(user, reason string) int {
	s.mu.Lock()
	s.revoked[user] = s.now()
	var conns []*relayConn
	for c := range s.relays[user] {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.revoke()
	}
	if len(conns) > 0 {
		s.log.Info("relay allocations revoked", "participant", user, "reason", reason, "allocations", len(conns))
	}
	if s.metrics != nil {
		s.metrics.revocations.Inc()
	}
	return len(conns)
}

// RestoreRevoked refuses the credentials of users who departed before this process
// started (a restart would otherwise forget them while their credentials, signed with a
// configured secret, stay valid for up to TTLMax). They have no relays here yet; nothing
// is counted. Readmit lifts it as it lifts Revoke.
func (s *Server) RestoreRevoked(users []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, u := range users {
		if _, ok := s.revoked[u]; !ok {
			s.revoked[u] = now
		}
	}
}

// Readmit lifts a revocation: the participant came back (a patient who left and opened the
// link again while the visit lasts).
func (s *Server) Readmit(user string) {
	s.mu.Lock()
	delete(s.revoked, user)
	s.mu.Unlock()
}

// Allocations returns the number of open allocations (of user, or all for "").
func (s *Server) Allocations(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if user == "" {
		return s.total
	}
	return len(s.relays[user])
}

// RelayedPackets counts the packets relayed for user (both directions, every allocation it
// had), for tests that watch packets stop.
func (s *Server) RelayedPackets(user string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.counts[user]; c != nil {
		return c.Load()
	}
	return 0
}

// Close stops the server: listeners and every allocation.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	err := s.srv.Close()
	s.mu.Lock()
	var conns []*relayConn
	for _, set := range s.relays {
		for c := range set {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return err
}

func (s *Server) closeSockets() {
	for _, c := range s.udp {
		c.Close()
	}
	for _, l := range s.listeners {
		l.Close()
	}
}

// authenticate is pion's AuthHandler: it checks the REST username and returns the key of
// the secret that signed the request.
func (s *Server) authenticate(ra *pionturn.RequestAttributes) (string, []byte, bool) {
	exp, user, err := parseUsername(ra.Username)
	now := s.now()
	switch {
	case err != nil:
	case exp.Sub(now) > s.cfg.TTLMax+5*time.Second:
		err = ErrOverTTL
	case ra.Method == stun.MethodAllocate && !now.Before(exp):
		err = ErrExpired
	case now.After(exp.Add(s.cfg.Grace)):
		err = ErrExpired
	case s.isRevoked(user):
		err = ErrRevoked
	}
	if err != nil {
		s.refused(ra.SrcAddr, user, refusalCode(err), nil)
		return "", nil, false
	}
	idx := 0
	if v, ok := s.prevSecret.LoadAndDelete(secretHintKey(ra.SrcAddr, ra.Username)); ok {
		idx = v.(int)
	}
	if idx >= len(s.secrets) {
		idx = 0
	}
	return user, longTermKey(ra.Username, ra.Realm, restPassword(s.secrets[idx], ra.Username)), true
}

func refusalCode(err error) string {
	switch {
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrOverTTL):
		return "over_ttl"
	case errors.Is(err, ErrRevoked):
		return "revoked"
	}
	return "malformed"
}

func secretHintKey(addr net.Addr, username string) string { return addr.String() + "|" + username }

func (s *Server) isRevoked(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.revoked[user]
	return ok
}

// quota is pion's QuotaHandler: 486 past the per-participant or total allocation limit.
func (s *Server) quota(user, _ string, src net.Addr) bool {
	s.mu.Lock()
	ok := len(s.relays[user]) < s.cfg.QuotaPerUser && s.total < s.cfg.QuotaTotal
	s.mu.Unlock()
	if !ok {
		s.refused(src, user, "quota", nil)
	}
	return ok
}

// refused records a refused request: audit, metrics and a log line (never the address of a
// peer, only the name of the range that forbids it).
func (s *Server) refused(src net.Addr, user, reason string, detail map[string]string) {
	if s.metrics != nil {
		s.metrics.refused.WithLabelValues(reason).Inc()
	}
	s.log.Info("turn request refused", "participant", user, "reason", reason, "range", detail["range"])
	if err := s.rec.Record(context.Background(), audit.Event{
		Action: audit.TURNRefused, ActorID: user, ActorRole: "participant", Addr: ipOf(src),
		Outcome: reason, Detail: detail,
	}); err != nil {
		s.log.Warn("audit: cannot record", "action", audit.TURNRefused, "err", err)
	}
}

func ipOf(a net.Addr) string {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.IP.String()
	case *net.TCPAddr:
		return a.IP.String()
	case nil:
		return ""
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return ""
	}
	return h
}

// events are pion's allocation callbacks: audit, metrics, and the fast path's table of
// channels (channels.go).
func (s *Server) events() pionturn.EventHandler {
	return pionturn.EventHandler{
		OnAuth: func(src, _ net.Addr, _, username, _, _ string, verdict bool) {
			if !verdict { // a wrong password: a forged or mistyped credential
				_, user, _ := parseUsername(username)
				s.refused(src, user, "bad_credentials", nil)
			}
		},
		OnAllocationCreated: func(src, _ net.Addr, protocol, user, _ string, relay net.Addr, _ int) {
			s.allocationCreated(src, relay, user)
			if s.metrics != nil {
				s.metrics.allocations.Inc()
				s.metrics.allocationsTotal.WithLabelValues(protocol).Inc()
			}
			if err := s.rec.Record(context.Background(), audit.Event{Action: audit.TURNAllocate, ActorID: user, ActorRole: "participant",
				Addr: ipOf(src), Outcome: "ok", Detail: map[string]string{"transport": transportOf(src)}}); err != nil {
				s.log.Warn("audit: cannot record", "action", audit.TURNAllocate, "err", err)
			}
		},
		OnChannelCreated: func(src, _ net.Addr, _, user, _ string, relay, peer net.Addr, number uint16) {
			s.channelCreated(src, relay, peer, user, number)
		},
		OnChannelDeleted: func(src, _ net.Addr, _, user, _ string, relay, _ net.Addr, number uint16) {
			s.channelDeleted(src, relay, user, number)
		},
		OnAllocationDeleted: func(src, _ net.Addr, _, user, _ string) {
			if s.metrics != nil {
				s.metrics.allocations.Dec()
			}
			if err := s.rec.Record(context.Background(), audit.Event{Action: audit.TURNDelete, ActorID: user, ActorRole: "participant",
				Addr: ipOf(src), Outcome: "ok"}); err != nil {
				s.log.Warn("audit: cannot record", "action", audit.TURNDelete, "err", err)
			}
		},
	}
}

func transportOf(a net.Addr) string {
	if _, ok := a.(*net.TCPAddr); ok {
		return "tcp"
	}
	return "udp"
}

// streamDropped counts a media frame a TCP or TLS client was not sent (streamout.go).
func (s *Server) streamDropped() {
	s.streamDrops.Add(1)
	if s.metrics != nil {
		s.metrics.streamDropped.Inc()
	}
}
