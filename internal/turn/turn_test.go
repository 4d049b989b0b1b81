package turn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"go.uber.org/goleak"

	"github.com/bedside/bedside/internal/audit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	secretA = []byte("current-secret-for-tests-0123456789")
	secretB = []byte("previous-secret-for-tests-987654321")
)

// recorder keeps audit events.
type recorder struct {
	ch chan audit.Event
}

func newRecorder() *recorder { return &recorder{ch: make(chan audit.Event, 1000)} }

func (r *recorder) Record(_ context.Context, e audit.Event) error {
	select {
	case r.ch <- e:
	default:
	}
	return nil
}

// startServer starts a server on loopback with the test secret; mutate adjusts the config.
func startServer(t testing.TB, mutate func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		Addr: "127.0.0.1:0", TCP: true, ICEHost: "127.0.0.1", UDPListeners: 2,
		Secrets: [][]byte{secretA},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (s *Server) udpAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())) }

// loopback allows relaying to 127.0.0.1, where the tests' peers live.
func loopback(c *Config) { c.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} }

func TestCredentials(t *testing.T) {
	now := time.Now()
	s := startServer(t, func(c *Config) { c.Secrets = [][]byte{secretA, secretB}; c.TTLMax = time.Hour })
	sign := func(secret []byte, expiry time.Time, user string) (string, string) {
		u := strconv.FormatInt(expiry.Unix(), 10) + ":" + user
		return u, restPassword(secret, u)
	}
	for _, tc := range []struct {
		name     string
		secret   []byte
		expiry   time.Time
		user     string
		username string // overrides
		want     stun.ErrorCode
	}{
		{name: "current secret", secret: secretA, expiry: now.Add(10 * time.Minute), user: "prt_a", want: 0},
		{name: "previous secret", secret: secretB, expiry: now.Add(10 * time.Minute), user: "prt_b", want: 0},
		{name: "forged: unknown secret", secret: []byte("guess"), expiry: now.Add(10 * time.Minute), user: "prt_c", want: stun.CodeUnauthorized},
		{name: "expired", secret: secretA, expiry: now.Add(-time.Second), user: "prt_d", want: stun.CodeUnauthorized},
		{name: "over the TTL cap", secret: secretA, expiry: now.Add(2 * time.Hour), user: "prt_e", want: stun.CodeUnauthorized},
		{name: "no user part", secret: secretA, username: strconv.FormatInt(now.Add(time.Minute).Unix(), 10), want: stun.CodeUnauthorized},
		{name: "no expiry", secret: secretA, username: "prt_f", want: stun.CodeUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, p := sign(tc.secret, tc.expiry, tc.user)
			if tc.username != "" {
				u, p = tc.username, restPassword(tc.secret, tc.username)
			}
			c := newUDPClient(t, s.udpAddr(), u, p)
			r := c.do(stun.MethodAllocate, requestedTransport(17))
			if got := errCode(r); got != tc.want {
				t.Errorf("Allocate: code %d, want %d", got, tc.want)
			}
		})
	}
	// What the server issues is accepted.
	cred := s.Issue("prt_issued", 10*time.Minute)
	newUDPClient(t, s.udpAddr(), cred.Username, cred.Password).allocate()
}

func TestIssuedCredentialFormat(t *testing.T) {
	s := startServer(t, nil)
	servers, exp := s.ICEServers("prt_x1", ForCall)
	if len(servers) != 2 {
		t.Fatalf("servers %+v", servers)
	}
	turn := servers[1]
	if got := exp.Sub(time.Now()); got < 9*time.Minute || got > 10*time.Minute+time.Second {
		t.Errorf("credential lives %v, want the 10 min default", got)
	}
	e, user, err := parseUsername(turn.Username)
	if err != nil || user != "prt_x1" || !e.Equal(exp) {
		t.Errorf("username %q: %v %q %v", turn.Username, e, user, err)
	}
	if turn.Credential != restPassword(secretA, turn.Username) {
		t.Error("password is not base64(HMAC-SHA1(secret, username))")
	}
	want := []string{"turn:127.0.0.1:" + strconv.Itoa(s.Port()) + "?transport=udp", "turn:127.0.0.1:" + strconv.Itoa(s.TCPPort()) + "?transport=tcp"}
	if fmt.Sprint(turn.URLs) != fmt.Sprint(want) {
		t.Errorf("urls %v, want %v", turn.URLs, want)
	}
	if servers, exp := s.ICEServers("prt_x1", NoRelay); len(servers) != 1 || !exp.IsZero() {
		t.Errorf("waiting participant gets %+v", servers)
	}
	if _, exp := s.ICEServers("vst_x1", ForCheck); exp.Sub(time.Now()) > 2*time.Minute+time.Second {
		t.Errorf("device check credential lives until %v", exp)
	}
}

// deniedSamples are addresses in every denied range: its first, a middle and its last
// address (IPv4 rows also as IPv4-mapped IPv6).
var deniedSamples = []string{
	"0.0.0.0", "0.1.2.3", "0.255.255.255",
	"10.0.0.0", "10.1.2.3", "10.255.255.255",
	"100.64.0.0", "100.100.1.1", "100.127.255.255",
	"127.0.0.0", "127.0.0.1", "127.255.255.255",
	"169.254.0.0", "169.254.169.254", "169.254.255.255",
	"172.16.0.0", "172.20.1.1", "172.31.255.255",
	"192.0.0.0", "192.0.0.8", "192.0.0.255",
	"192.168.0.0", "192.168.1.1", "192.168.255.255",
	"198.18.0.0", "198.19.1.1", "198.19.255.255",
	"224.0.0.0", "239.1.2.3", "239.255.255.255",
	"240.0.0.0", "250.1.2.3", "255.255.255.254",
	"255.255.255.255",
	"::", "::1",
	"fc00::", "fd12:3456::1", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	"fe80::", "fe80::1", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	"ff00::", "ff02::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	"64:ff9b::", "64:ff9b::a00:1", "64:ff9b::ffff:ffff",
	"2002::", "2002:a00:1::1", "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
}

// forms returns the address in every form a client can send it in.
func forms(s string) map[string]net.IP {
	ip := net.ParseIP(s)
	if v4 := ip.To4(); v4 != nil {
		return map[string]net.IP{"ipv4": v4, "ipv4-mapped-ipv6": v4.To16()}
	}
	return map[string]net.IP{"ipv6": ip.To16()}
}

func TestPeerPolicyCheck(t *testing.T) {
	p := NewPeerPolicy(nil)
	for _, s := range deniedSamples {
		for form, ip := range forms(s) {
			if ok, by := p.Check(ip); ok || by == "" {
				t.Errorf("%s (%s): allowed", s, form)
			}
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0",
		"192.0.1.0", "192.167.255.255", "198.17.255.255", "198.20.0.0", "223.255.255.255", "2001:4860:4860::8888", "2606:4700::1111"} {
		for form, ip := range forms(s) {
			if ok, by := p.Check(ip); !ok {
				t.Errorf("%s (%s): denied by %s", s, form, by)
			}
		}
	}
	allow, err := ParseAllowList("198.18.0.0/15, 10.9.8.7, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	p = NewPeerPolicy(allow)
	for _, s := range []string{"198.18.1.2", "198.19.0.1", "10.9.8.7", "fd00::5"} {
		for form, ip := range forms(s) {
			if ok, by := p.Check(ip); !ok {
				t.Errorf("allow-listed %s (%s): denied by %s", s, form, by)
			}
		}
	}
	if ok, _ := p.Check(net.ParseIP("10.9.8.6")); ok {
		t.Error("10.9.8.6 allowed by the single address 10.9.8.7")
	}
	if _, err := ParseAllowList("10.0.0.0/33"); err == nil {
		t.Error("a bad prefix parses")
	}
}

// TestPeerPolicyExact: an exact allowed address (the SFU's) lets its IP be a peer, and only
// its port receives packets; neighbours and other ports of that IP stay denied.
func TestPeerPolicyExact(t *testing.T) {
	p := NewPeerPolicy(nil).WithExact([]netip.AddrPort{netip.MustParseAddrPort("10.1.2.3:3479"), netip.MustParseAddrPort("[::ffff:127.0.0.1]:4000")})
	for _, ip := range []string{"10.1.2.3", "::ffff:10.1.2.3", "127.0.0.1"} {
		if ok, by := p.Check(net.ParseIP(ip)); !ok {
			t.Errorf("%s denied by %s", ip, by)
		}
	}
	if ok, _ := p.Check(net.ParseIP("10.1.2.4")); ok {
		t.Error("a neighbour of the exact address is allowed")
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"10.1.2.3:3479", true}, {"10.1.2.3:22", false}, {"[::ffff:10.1.2.3]:3479", true},
		{"127.0.0.1:4000", true}, {"127.0.0.1:4001", false}, {"8.8.8.8:53", true},
	} {
		ua, _ := net.ResolveUDPAddr("udp", tc.addr)
		if got := p.PortAllowed(ua); got != tc.want {
			t.Errorf("PortAllowed(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if !NewPeerPolicy(nil).PortAllowed(&net.UDPAddr{IP: net.ParseIP("10.0.0.1"), Port: 1}) {
		t.Error("without exact addresses every port passes (the denied ranges were checked at permission time)")
	}
}

// TestPeerPolicyOnTheWire: a CreatePermission and a ChannelBind towards every denied range,
// in every form, get 403 from the server; an allowed peer is relayed to.
func TestPeerPolicyOnTheWire(t *testing.T) {
	s := startServer(t, nil)
	cred := s.Issue("prt_policy", 10*time.Minute)
	c := newUDPClient(t, s.udpAddr(), cred.Username, cred.Password)
	c.allocate()
	ch := uint16(0x4000)
	for _, sample := range deniedSamples {
		for form, ip := range forms(sample) {
			if r := c.do(stun.MethodCreatePermission, peerAddr{ip, 5000}); errCode(r) != stun.CodeForbidden {
				t.Errorf("CreatePermission %s (%s): code %d, want 403", sample, form, errCode(r))
			}
			if r := c.do(stun.MethodChannelBind, channelNumber(ch), peerAddr{ip, 5000}); errCode(r) != stun.CodeForbidden {
				t.Errorf("ChannelBind %s (%s): code %d, want 403", sample, form, errCode(r))
			}
			ch++
		}
	}
	// A public address is fine (no packet is sent: a permission only).
	if r := c.do(stun.MethodCreatePermission, peerAddr{net.ParseIP("203.0.113.7").To4(), 5000}); errCode(r) != 0 {
		t.Errorf("CreatePermission to a public address: %d", errCode(r))
	}
}

// TestAllowedPeerRelays: with 127.0.0.1 allow-listed, data goes through both ways, by
// Send indication and by channel.
func TestAllowedPeerRelays(t *testing.T) {
	s := startServer(t, loopback)
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	pa := peer.LocalAddr().(*net.UDPAddr)
	cred := s.Issue("prt_relay", 10*time.Minute)
	c := newUDPClient(t, s.udpAddr(), cred.Username, cred.Password)
	relay := c.allocate()
	if r := c.do(stun.MethodChannelBind, channelNumber(0x4001), peerAddr{pa.IP.To4(), pa.Port}); errCode(r) != 0 {
		t.Fatalf("ChannelBind to an allowed peer: %d", errCode(r))
	}
	c.send(channelData(0x4001, []byte("hello peer")))
	buf := make([]byte, 1500)
	peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := peer.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello peer" {
		t.Fatalf("peer got %q from %v: %v", buf[:n], from, err)
	}
	if from.(*net.UDPAddr).Port != relay.Port {
		t.Errorf("came from port %d, the relay is %d", from.(*net.UDPAddr).Port, relay.Port)
	}
	peer.WriteTo([]byte("hello client"), from)
	c.udp.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err = c.udp.ReadFrom(buf)
	if err != nil || string(buf[4:n]) != "hello client" {
		t.Fatalf("client got %q: %v", buf[:n], err)
	}
}

func TestQuota(t *testing.T) {
	s := startServer(t, func(c *Config) { c.QuotaPerUser = 2; c.QuotaTotal = 3 })
	cred := s.Issue("prt_quota", 10*time.Minute)
	for i := range 2 {
		newUDPClient(t, s.udpAddr(), cred.Username, cred.Password).allocate()
		if got := s.Allocations("prt_quota"); got != i+1 {
			t.Fatalf("allocations %d", got)
		}
	}
	r := newUDPClient(t, s.udpAddr(), cred.Username, cred.Password).do(stun.MethodAllocate, requestedTransport(17))
	if errCode(r) != stun.CodeAllocQuotaReached {
		t.Errorf("third allocation of one participant: code %d, want 486", errCode(r))
	}
	other := s.Issue("prt_other", 10*time.Minute)
	newUDPClient(t, s.udpAddr(), other.Username, other.Password).allocate()
	third := s.Issue("prt_third", 10*time.Minute)
	r = newUDPClient(t, s.udpAddr(), third.Username, third.Password).do(stun.MethodAllocate, requestedTransport(17))
	if errCode(r) != stun.CodeAllocQuotaReached {
		t.Errorf("allocation past the total: code %d, want 486", errCode(r))
	}
}

func TestLifetimeCap(t *testing.T) {
	s := startServer(t, nil)
	cred := s.Issue("prt_life", 10*time.Minute)
	c := newUDPClient(t, s.udpAddr(), cred.Username, cred.Password)
	r := c.do(stun.MethodAllocate, requestedTransport(17), lifetime(24*time.Hour))
	if errCode(r) != 0 {
		t.Fatal(errCode(r))
	}
	if got := getLifetime(r); got <= 0 || got > time.Hour {
		t.Errorf("lifetime %v granted for a request of 24 h; want at most 1 h", got)
	}
	r = c.do(stun.MethodRefresh, lifetime(5*time.Hour))
	if got := getLifetime(r); errCode(r) != 0 || got > time.Hour {
		t.Errorf("refresh: code %d lifetime %v", errCode(r), got)
	}
}

func TestTCPRelayOffAndConnectDenied(t *testing.T) {
	s := startServer(t, nil)
	cred := s.Issue("prt_tcp", 10*time.Minute)
	conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.TCPPort())))
	if err != nil {
		t.Fatal(err)
	}
	c := newStreamClient(t, conn, cred.Username, cred.Password)
	if r := c.do(stun.MethodAllocate, requestedTransport(6)); errCode(r) != stun.CodeUnsupportedTransProto {
		t.Errorf("TCP allocation with TCP relaying off: code %d, want 442", errCode(r))
	}
	// A UDP allocation over TCP works, and the guard reads the stream: 403 for a denied peer.
	if r := c.do(stun.MethodAllocate, requestedTransport(17)); errCode(r) != 0 {
		t.Fatalf("UDP allocation over TCP: %d", errCode(r))
	}
	if r := c.do(stun.MethodChannelBind, channelNumber(0x4000), peerAddr{net.ParseIP("10.0.0.1").To16(), 80}); errCode(r) != stun.CodeForbidden {
		t.Errorf("ChannelBind over TCP to 10.0.0.1 (mapped): %d", errCode(r))
	}

	// With TCP relaying on: Connect to a denied peer is 403, in every form.
	s2 := startServer(t, func(c *Config) { c.TCPRelay = true })
	cred2 := s2.Issue("prt_tcp2", 10*time.Minute)
	conn2, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s2.TCPPort())))
	if err != nil {
		t.Fatal(err)
	}
	c2 := newStreamClient(t, conn2, cred2.Username, cred2.Password)
	if r := c2.do(stun.MethodAllocate, requestedTransport(6)); errCode(r) != 0 {
		t.Fatalf("TCP allocation: %d", errCode(r))
	}
	for _, sample := range []string{"127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "fd00::1"} {
		for form, ip := range forms(sample) {
			if r := c2.do(stun.MethodConnect, peerAddr{ip, 80}); errCode(r) != stun.CodeForbidden {
				t.Errorf("Connect %s (%s): code %d, want 403", sample, form, errCode(r))
			}
		}
	}
}

func TestTLSListener(t *testing.T) {
	cert := selfSigned(t)
	s := startServer(t, func(c *Config) {
		c.TLSAddr = "127.0.0.1:0"
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.TLSPort())), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	cred := s.Issue("prt_tls", 10*time.Minute)
	c := newStreamClient(t, conn, cred.Username, cred.Password)
	if r := c.do(stun.MethodAllocate, requestedTransport(17)); errCode(r) != 0 {
		t.Fatalf("allocation over TLS: %d", errCode(r))
	}
	if r := c.do(stun.MethodCreatePermission, peerAddr{net.ParseIP("192.168.1.1").To4(), 80}); errCode(r) != stun.CodeForbidden {
		t.Errorf("CreatePermission over TLS to 192.168.1.1: %d", errCode(r))
	}
	servers, _ := s.ICEServers("prt_tls", ForCall)
	if u := servers[1].URLs; u[len(u)-1] != "turns:127.0.0.1:"+strconv.Itoa(s.TLSPort())+"?transport=tcp" {
		t.Errorf("urls %v", u)
	}
}

func selfSigned(t testing.TB) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "turn.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestRevoke: packets relayed for a participant stop at once when it is revoked, and its
// credentials stop working until it is readmitted.
func TestRevoke(t *testing.T) {
	s := startServer(t, loopback)
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	pa := peer.LocalAddr().(*net.UDPAddr)
	cred := s.Issue("prt_rev", 10*time.Minute)
	c := newUDPClient(t, s.udpAddr(), cred.Username, cred.Password)
	c.allocate()
	if r := c.do(stun.MethodChannelBind, channelNumber(0x4000), peerAddr{pa.IP.To4(), pa.Port}); errCode(r) != 0 {
		t.Fatal(errCode(r))
	}
	var received atomic.Int64
	var lastAt atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			peer.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, _, err := peer.ReadFrom(buf); err != nil {
				return
			}
			received.Add(1)
			lastAt.Store(time.Now().UnixNano())
		}
	}()
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				c.udp.WriteTo(channelData(0x4000, []byte("media")), c.server)
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	if received.Load() == 0 {
		t.Fatal("nothing relayed before the revocation")
	}
	revokedAt := time.Now()
	if n := s.Revoke("prt_rev", "removed"); n != 1 {
		t.Errorf("Revoke closed %d allocations, want 1", n)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	<-sent
	<-done
	last := time.Unix(0, lastAt.Load())
	if d := last.Sub(revokedAt); d > 2*time.Second {
		t.Errorf("packets went on %v after the revocation", d)
	}
	t.Logf("last packet %v after the revocation", last.Sub(revokedAt).Round(time.Millisecond))
	if s.Allocations("prt_rev") != 0 {
		t.Errorf("%d allocations left", s.Allocations("prt_rev"))
	}
	// The same credential no longer allocates.
	r := newUDPClient(t, s.udpAddr(), cred.Username, cred.Password).do(stun.MethodAllocate, requestedTransport(17))
	if errCode(r) != stun.CodeUnauthorized {
		t.Errorf("allocation after revocation: code %d, want 401", errCode(r))
	}
	s.Readmit("prt_rev")
	newUDPClient(t, s.udpAddr(), cred.Username, cred.Password).allocate()
}

func TestBandwidthLimit(t *testing.T) {
	s := startServer(t, func(c *Config) { loopback(c); c.BandwidthKbps = 800 }) // 100 kB/s, burst 64 KiB
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	pa := peer.LocalAddr().(*net.UDPAddr)
	cred := s.Issue("prt_bw", 10*time.Minute)
	c := newUDPClient(t, s.udpAddr(), cred.Username, cred.Password)
	c.allocate()
	if r := c.do(stun.MethodChannelBind, channelNumber(0x4000), peerAddr{pa.IP.To4(), pa.Port}); errCode(r) != 0 {
		t.Fatal(errCode(r))
	}
	payload := make([]byte, 1000)
	for range 300 { // 300 kB at once
		c.udp.WriteTo(channelData(0x4000, payload), c.server)
		time.Sleep(100 * time.Microsecond)
	}
	got := 0
	buf := make([]byte, 1500)
	for {
		peer.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, _, err := peer.ReadFrom(buf); err != nil {
			break
		}
		got++
	}
	// The burst (64 KiB) and what the rate refills during the ~50 ms of sending.
	if got < 50 || got > 120 {
		t.Errorf("%d of 300 packets of 1000 bytes passed a 800 kbit/s limit; want about 70", got)
	}
}

func TestAuditEvents(t *testing.T) {
	rec := newRecorder()
	s := startServer(t, func(c *Config) { c.Recorder = rec })
	cred := s.Issue("prt_audit", 10*time.Minute)
	c := newUDPClient(t, s.udpAddr(), cred.Username, cred.Password)
	c.allocate()
	c.do(stun.MethodCreatePermission, peerAddr{net.ParseIP("10.1.1.1").To4(), 1})
	s.Revoke("prt_audit", "left")
	want := map[audit.Action]bool{audit.TURNAllocate: false, audit.TURNRefused: false, audit.TURNDelete: false}
	deadline := time.After(3 * time.Second)
	for !(want[audit.TURNAllocate] && want[audit.TURNRefused] && want[audit.TURNDelete]) {
		select {
		case e := <-rec.ch:
			want[e.Action] = true
			if e.ActorID != "prt_audit" {
				t.Errorf("%s event names %q", e.Action, e.ActorID)
			}
			if e.Action == audit.TURNRefused && (e.Outcome != "peer_denied" || e.Detail["range"] != "private") {
				t.Errorf("refusal %+v", e)
			}
			for k, v := range e.Detail {
				if v == "10.1.1.1" {
					t.Errorf("detail %s holds the peer address", k)
				}
			}
		case <-deadline:
			t.Fatalf("events seen: %v", want)
		}
	}
}

func TestExternalMode(t *testing.T) {
	s, err := Start(Config{External: []string{"turn:turn.clinic.example:3478?transport=udp", "turns:turn.clinic.example:443?transport=tcp"},
		Secrets: [][]byte{secretA}, ICEHost: "clinic.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	servers, exp := s.ICEServers("prt_ext", ForCall)
	if len(servers) != 1 || len(servers[0].URLs) != 2 || exp.IsZero() || servers[0].Credential != restPassword(secretA, servers[0].Username) {
		t.Errorf("external: %+v", servers)
	}
	if _, err := Start(Config{External: []string{"turn:x"}}); err == nil {
		t.Error("external mode without a secret starts")
	}
}
