package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/config"
)

const acmeDomain = "visits.clinic.test"

// pebbleCA is a real ACME CA in the test: Pebble (Let's Encrypt's CA for tests, the same
// protocol and challenge checks as theirs), its directory on an httptest HTTPS server, its
// name lookups answered by a DNS server of the test that puts every name at 127.0.0.1.
// Nothing leaves the machine.
type pebbleCA struct {
	dir     string       // the directory's URL
	caFile  string       // PEM of the directory's HTTPS certificate (acme-ca-file)
	lookups atomic.Int32 // A queries the CA made
	handler atomic.Pointer[http.Handler]
	roots   *x509.CertPool // what the certificates it issues chain to (set by start)
	logTo   io.Writer
}

func newPebbleCA(t *testing.T) *pebbleCA {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random wait of up to 15 s before each check
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no nonces refused at random (5% by default)
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order checks its names anew
	p := &pebbleCA{logTo: io.Discard}
	if os.Getenv("BEDSIDETEST_LOG") != "" {
		p.logTo = os.Stderr
	}
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := p.handler.Load()
		if h == nil {
			http.Error(w, "the CA is not running", http.StatusServiceUnavailable)
			return
		}
		(*h).ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	p.dir = ts.URL + wfe.DirectoryPath
	p.caFile = filepath.Join(t.TempDir(), "acme-ca.pem")
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs the CA, which checks a name by HTTP-01 on httpPort and by TLS-ALPN-01 on
// tlsPort of the address the name resolves to.
func (p *pebbleCA) start(t *testing.T, httpPort, tlsPort int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // Pebble's resolver asks over TCP
	if err != nil {
		t.Fatal(err)
	}
	ds := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				p.lookups.Add(1)
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(127, 0, 0, 1)})
			}
		}
		w.WriteMsg(m)
	})}
	served := make(chan struct{})
	go func() { defer close(served); ds.ActivateAndServe() }()
	t.Cleanup(func() { ds.Shutdown(); <-served })

	logger := log.New(p.logTo, "pebble ", log.LstdFlags)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "the default"}})
	validator := va.New(logger, httpPort, tlsPort, false, ln.Addr().String(), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	h := front.Handler()
	p.roots = x509.NewCertPool()
	p.roots.AddCert(authority.GetRootCert(0).Cert)
	p.handler.Store(&h)
}

// stop makes the CA answer nothing more.
func (p *pebbleCA) stop() { p.handler.Store(nil) }

// port80 stands for port 80 in front of the HTTP-01 listener at addr, and returns its own
// port, which the CA is told to check. A CA checks HTTP-01 on port 80, so its request
// names the host alone ("Host: visits.clinic.test"), and autocert refuses a host with a
// port; a test cannot take port 80, and Pebble, checking another, names it. This passes
// the CA's requests on to addr with the host as a request to port 80 names it, and
// nothing else about them changed.
func port80(t *testing.T, addr string) int {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: addr}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
		if host, _, err := net.SplitHostPort(r.In.Host); err == nil {
			r.Out.Host = host
		}
	}}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)
	return front.Listener.Addr().(*net.TCPAddr).Port
}

// closedPort is a TCP port on 127.0.0.1 that nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// TestACMEIssuance: with acme-domains, the server gets its certificate from a real ACME CA
// and serves HTTPS with it, as a clinic's server gets one from Let's Encrypt (or its
// hospital's own ACME CA, trusted by acme-ca-file). The CA checks that the server answers
// for the name: by TLS-ALPN-01 on the web port, and, where that port cannot be reached from
// the CA, by HTTP-01 on acme-http-addr. The certificate is kept in acme-cache-dir: after a
// restart the server serves it with the CA gone.
func TestACMEIssuance(t *testing.T) {
	ignorePebble := goleak.IgnoreAnyFunction("github.com/letsencrypt/pebble/v2/va.VAImpl.processTasks")
	for _, c := range []struct {
		name     string
		alpnPort bool // the CA reaches the web port only (else acme-http-addr only)
	}{
		{"tls-alpn-01 on the web port", true},
		{"http-01 on acme-http-addr", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			opt := goleak.IgnoreCurrent()
			t.Cleanup(func() {
				if err := goleak.Find(opt, ignorePebble); err != nil {
					t.Error(err)
				}
			})
			pebble := newPebbleCA(t)
			srv := apptest.Start(t, apptest.Options{Config: func(cfg *config.Config) {
				cfg.ACMEDomains = acmeDomain
				cfg.PublicURL = "https://" + acmeDomain
				cfg.ACMEHTTPAddr = "127.0.0.1:0"
				cfg.ACMEDir = pebble.dir
				cfg.ACMECAFile = pebble.caFile
				cfg.ACMEEmail = "ops@clinic.test"
			}})
			// Each case leaves the CA one way to check the name: the other port is closed.
			httpPort, tlsPort := closedPort(t), srv.Addr().(*net.TCPAddr).Port
			if !c.alpnPort {
				httpPort, tlsPort = port80(t, srv.ACMEHTTPAddr()), closedPort(t)
			}
			pebble.start(t, httpPort, tlsPort)

			// The first browser to come asks for the name; the server gets the certificate
			// meanwhile (a few seconds: an account, an order, the challenge, the issuance).
			started := time.Now()
			cert := httpsGet(t, srv.Addr().String(), pebble.roots, "/healthz", 60*time.Second)
			t.Logf("certificate issued and served %v after the first handshake began", time.Since(started).Round(time.Millisecond))
			if !slices.Contains(cert.DNSNames, acmeDomain) {
				t.Errorf("the certificate served names %v, want %s", cert.DNSNames, acmeDomain)
			}
			if pebble.lookups.Load() == 0 {
				t.Error("the CA never looked the name up: it checked no challenge")
			}
			if _, err := os.Stat(filepath.Join(srv.Config.ACMECacheDir, acmeDomain)); err != nil {
				t.Errorf("the certificate is not in acme-cache-dir: %v", err)
			}
			if !c.alpnPort {
				// acme-http-addr sends everything but challenges to https (a browser's
				// request, to port 80, names the host alone).
				req, err := http.NewRequest(http.MethodGet, "http://"+srv.ACMEHTTPAddr()+"/console", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Host = acmeDomain
				client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if loc := resp.Header.Get("Location"); resp.StatusCode/100 != 3 || loc != "https://"+acmeDomain+"/console" {
					t.Errorf("plain HTTP to acme-http-addr: %d to %q, want a redirect to https://%s/console", resp.StatusCode, loc, acmeDomain)
				}
			}

			// autocert withdraws the order's pending authorizations in a goroutine of its
			// own once the certificate is issued: let it finish while the CA answers (with
			// the CA gone it retries for up to 5 minutes, and the leak check found it in a
			// run of the whole suite).
			waitGoroutineGone(t, "acme/autocert.(*Manager).deactivatePendingAuthz", 20*time.Second)

			// A restart with the CA gone: the certificate comes from the cache.
			pebble.stop()
			srv.Restart(t)
			again := httpsGet(t, srv.Addr().String(), pebble.roots, "/healthz", 20*time.Second)
			if !again.Equal(cert) {
				t.Errorf("after a restart the server serves another certificate (serial %v, was %v)", again.SerialNumber, cert.SerialNumber)
			}
		})
	}
}

// httpsGet fetches path from the server at addr as https://acmeDomain, checking its
// certificate against roots, and returns the certificate it served. The request must
// answer 200.
func httpsGet(t *testing.T, addr string, roots *x509.CertPool, path string, timeout time.Duration) *x509.Certificate {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: acmeDomain, MinVersion: tls.VersionTLS12},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: timeout}
	resp, err := client.Get("https://" + acmeDomain + path)
	if err != nil {
		t.Fatalf("GET https://%s%s: %v", acmeDomain, path, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET https://%s%s: %s", acmeDomain, path, resp.Status)
	}
	if resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 {
		t.Fatalf("GET https://%s%s: no verified chain", acmeDomain, path)
	}
	return resp.TLS.PeerCertificates[0]
}

// TestACMECAFileNotPEM: a server told to trust a private ACME CA by a file that holds no
// certificate stops at start, naming the option, rather than failing at the first
// visitor's handshake.
func TestACMECAFileNotPEM(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.der")
	if err := os.WriteFile(notPEM, []byte{0x30, 0x82, 0x01, 0x0a}, 0o600); err != nil {
		t.Fatal(err)
	}
	r := bedside(t, "", nil, "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--stun-addr", "off",
		"--acme-domains", acmeDomain, "--public-url", "https://"+acmeDomain, "--acme-http-addr", "127.0.0.1:0",
		"--acme-directory", "https://127.0.0.1:1/dir", "--acme-ca-file", notPEM)
	if r.code == 0 || !strings.Contains(r.stderr, "acme-ca-file") || !strings.Contains(r.stderr, "no PEM certificate") {
		t.Errorf("serve with a CA file of no PEM: code %d, stderr %q", r.code, r.stderr)
	}
}

// waitGoroutineGone waits until no goroutine has fn in its stack.
func waitGoroutineGone(t *testing.T, fn string, within time.Duration) {
	t.Helper()
	start := time.Now()
	for strings.Contains(goroutineStacks(), fn) {
		if time.Since(start) > within {
			t.Errorf("a goroutine running %s is still there after %v", fn, within)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	if waited := time.Since(start); waited > 20*time.Millisecond {
		t.Logf("waited %v for %s to end", waited.Round(time.Millisecond), fn)
	}
}
