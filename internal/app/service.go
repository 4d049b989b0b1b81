// Package app wires Bedside together by hand, in order (config -> store -> auth -> visit ->
// turn -> signal -> web), closes it in reverse, and holds the command-line commands.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/config"
	"github.com/bedside/bedside/internal/sfu"
	"github.com/bedside/bedside/internal/signal"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/store/sqlite"
	"github.com/bedside/bedside/internal/turn"
	"github.com/bedside/bedside/internal/visit"
	"github.com/bedside/bedside/internal/web"
)

// Service is a running Bedside server.
type Service struct {
	cfg    config.Config
	log    *slog.Logger
	store  *sqlite.Store
	audit  *audit.Log
	cps    *audit.Checkpointer
	visits *visit.Manager
	sfu    *sfu.SFU // nil when sfu-udp-addr is off
	turn   *turn.Server
	signal *signal.Server
	web    *web.Server
	http   *http.Server
	ln     net.Listener
	now    func() time.Time

	acmeHTTP *http.Server // HTTP-01 challenges and the redirect to https (ACME only)
	acmeLn   net.Listener

	registry   *prometheus.Registry // every metric; served on --metrics-addr
	metrics    *appMetrics
	metricsSrv *http.Server // nil when --metrics-addr is off
	metricsLn  net.Listener

	cancel   context.CancelFunc // stops the background loops
	wg       sync.WaitGroup     // the background loops and the HTTP server
	served   chan struct{}      // closed when http.Server.Serve has returned
	serveErr error              // what it returned; read after served is closed
}

// Options are test hooks; the zero value is right for production.
type Options struct {
	Now func() time.Time
	// PingEvery and PongWait override the signalling liveness timing; KeepAliveEvery how
	// often a clinician in a call keeps the sign-in session alive (signal.KeepAliveEvery).
	PingEvery, PongWait, KeepAliveEvery time.Duration
	// TURNSockets, if set, runs the creation of each relay socket (network-namespace tests
	// make them inside the server's namespace).
	TURNSockets func(create func())
}

// Start opens the database, starts STUN and the web server, and returns once they listen.
// Stop it with Shutdown.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger, opt Options) (svc *Service, err error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &Service{cfg: cfg, log: log, served: make(chan struct{}), now: opt.Now, registry: prometheus.NewRegistry()}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = newAppMetrics(s.registry)
	defer func() {
		if err != nil {
			s.closeParts()
		}
	}()
	if s.store, err = sqlite.OpenWith(ctx, cfg.DataDir, sqlite.Options{DataKeyFile: cfg.DataKeyFile}); err != nil {
		return nil, err
	}
	s.audit = audit.NewLog(s.store, opt.Now)
	signer, _, created, err := audit.LoadSigner(cfg.AuditKeyFile)
	if err != nil {
		return nil, fmt.Errorf("audit-key-file: %w", err)
	}
	if created {
		s.recordSystem(ctx, audit.Event{Action: audit.KeyCreated, Detail: map[string]string{"key": "audit"}})
		log.Info("audit checkpoint key created", "file", cfg.AuditKeyFile, "public_key", cfg.AuditKeyFile+".pub")
	}
	if s.store.KeyCreated() {
		s.recordSystem(ctx, audit.Event{Action: audit.KeyCreated, Detail: map[string]string{"key": "data"}})
		log.Warn("data key created: back it up apart from the database; without it patient names cannot be read", "file", cfg.DataKeyFile)
	}
	s.cps = audit.NewCheckpointer(s.store, signer, cfg.AuditCheckpointFile, opt.Now)
	s.recordSystem(ctx, audit.Event{Action: audit.ConfigStart, Detail: map[string]string{
		"require_mfa":      strconv.FormatBool(cfg.RequireMFA),
		"session_idle":     cfg.SessionIdle.String(),
		"session_lifetime": cfg.SessionLifetime.String(),
		"retention":        cfg.Retention.String(),
		"tls":              strconv.FormatBool(cfg.TLS()),
		"acme":             strconv.FormatBool(cfg.ACMEDomains != ""),
		"allowed_origins":  strconv.Itoa(len(cfg.Origins())),
		"public_url":       cfg.PublicURL,
	}})
	sessions, err := auth.NewSessions(s.store, cfg.SessionIdle, cfg.SessionLifetime, opt.Now, auth.SessionOptions{RequireMFA: cfg.RequireMFA, Audit: s.audit})
	if err != nil {
		return nil, err
	}
	if s.sfu, err = startSFU(cfg, log.With("part", "sfu"), s.registry); err != nil {
		return nil, err
	}
	vcfg := visit.Config{LinkTTL: cfg.LinkTTL, Now: opt.Now, Log: log.With("part", "visit"), Audit: s.audit, Departed: s.departed}
	if s.sfu != nil {
		vcfg.Media = sfuMedia{s.sfu}
	}
	s.visits = visit.NewManager(s.store, vcfg)
	var sfuAddrs []netip.AddrPort
	if s.sfu != nil {
		sfuAddrs = s.sfu.Addresses()
	}
	if s.turn, err = startTURN(cfg, log.With("part", "turn"), s.registry, turnAudit{s.audit, s.store}, opt.TURNSockets, sfuAddrs); err != nil {
		return nil, err
	}
	if err = s.restoreRevocations(ctx, cfg); err != nil {
		return nil, err
	}
	s.signal = signal.NewServer(signal.Config{
		Visits:         s.visits,
		ICE:            s.iceConfig,
		Connection:     s.connection,
		OriginPatterns: append([]string{publicOrigin(cfg.PublicURL)}, cfg.Origins()...),
		Audit:          s.audit,
		Log:            log.With("part", "signal"),
		PingEvery:      opt.PingEvery,
		PongWait:       opt.PongWait,
		KeepAliveEvery: opt.KeepAliveEvery,
	})
	if s.ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http-addr: %w", err)
	}
	if strings.HasSuffix(cfg.PublicURL, ":0") {
		// Listening on an ephemeral port (tests): links name the port actually bound.
		cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "0") + strconv.Itoa(s.ln.Addr().(*net.TCPAddr).Port)
		s.cfg.PublicURL = cfg.PublicURL
	}
	proxies, err := cfg.TrustedProxyList() // checked by the configuration's validation
	if err != nil {
		return nil, err
	}
	if s.web, err = web.New(web.Config{
		Sessions:  sessions,
		Visits:    s.visits,
		Users:     s.store,
		Signal:    s.signal,
		CheckICE:  s.checkICE,
		PublicURL: cfg.PublicURL,
		TLS:       cfg.TLS(),
		Log:       log.With("part", "web"),
		Now:       opt.Now,
		Audit:     s.audit,

		AllowedOrigins: cfg.Origins(),
		TrustedProxies: proxies,
	}); err != nil {
		return nil, err
	}
	s.http = &http.Server{
		Handler:           s.web,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	switch {
	case cfg.ACMEDomains != "":
		if err := s.startACME(); err != nil {
			return nil, err
		}
	case cfg.TLS():
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("tls-cert/tls-key: %w", err)
		}
		s.http.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		s.ln = tls.NewListener(s.ln, s.http.TLSConfig)
	}

	if cfg.MetricsAddr != "" {
		if s.metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return nil, fmt.Errorf("metrics-addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
		if cfg.DebugPprof { // config checked that the listener is on loopback
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		s.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.metricsSrv.Serve(s.metricsLn) }()
	}

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.wg.Add(5)
	go func() { defer s.wg.Done(); s.serveErr = s.http.Serve(s.ln); close(s.served) }()
	go func() { defer s.wg.Done(); s.visits.Run(bg) }()
	go func() { defer s.wg.Done(); s.sweepSessions(bg, opt.Now) }()
	go func() { defer s.wg.Done(); s.checkpoints(bg) }()
	go func() { defer s.wg.Done(); s.retention(bg) }()
	if s.acmeHTTP != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.acmeHTTP.Serve(s.acmeLn) }()
	}
	sfuPort := 0
	if s.sfu != nil {
		sfuPort = s.sfu.Port()
	}
	log.Info("bedside serving", "http", s.ln.Addr().String(), "public_url", cfg.PublicURL, "stun_port", s.turn.Port(),
		"turn", cfg.TURN, "relay", s.turn.Enabled(), "sfu_port", sfuPort, "tls", cfg.TLS(), "metrics", cfg.MetricsAddr)
	return s, nil
}

// sweepSessions deletes expired sign-in sessions every 10 minutes.
func (s *Service) sweepSessions(ctx context.Context, now func() time.Time) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.store.DeleteExpiredSessions(ctx, now(), s.cfg.SessionIdle); err != nil && ctx.Err() == nil {
				s.log.Warn("cannot delete expired sessions", "err", err)
			}
		}
	}
}

// startACME serves TLS with certificates from an ACME CA (Let's Encrypt by default), got
// and renewed by golang.org/x/crypto/acme/autocert for the acme-domains only, cached in
// acme-cache-dir (mode 0700). TLS-ALPN-01 challenges are answered on the web port itself;
// HTTP-01 challenges (and a redirect of everything else to https) on acme-http-addr.
func (s *Service) startACME() error {
	cfg := s.cfg
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(cfg.ACMEList()...),
		Cache:      autocert.DirCache(cfg.ACMECacheDir),
		Email:      cfg.ACMEEmail,
	}
	if cfg.ACMEDir != "" || cfg.ACMECAFile != "" {
		m.Client = &acme.Client{DirectoryURL: cfg.ACMEDir}
	}
	if cfg.ACMECAFile != "" {
		// A private ACME CA (a hospital's own, or Pebble in TestACMEIssuance): its
		// directory's HTTPS is checked against the roots given, not the system's.
		pem, err := os.ReadFile(cfg.ACMECAFile)
		if err != nil {
			return fmt.Errorf("acme-ca-file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("acme-ca-file: no PEM certificate in %s", cfg.ACMECAFile)
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		m.Client.HTTPClient = &http.Client{Transport: t}
	}
	tc := m.TLSConfig()
	tc.MinVersion = tls.VersionTLS12
	s.http.TLSConfig = tc
	s.ln = tls.NewListener(s.ln, tc)
	if cfg.ACMEHTTPAddr == "off" {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.ACMEHTTPAddr)
	if err != nil {
		return fmt.Errorf("acme-http-addr: %w", err)
	}
	s.acmeLn = ln
	s.acmeHTTP = &http.Server{Handler: m.HTTPHandler(nil), ReadHeaderTimeout: 10 * time.Second, ErrorLog: s.http.ErrorLog}
	return nil
}

// TLSConfig is the web server's TLS configuration (nil without TLS), for tests.
func (s *Service) TLSConfig() *tls.Config { return s.http.TLSConfig }

// ACMEHTTPAddr is where ACME HTTP-01 challenges are answered ("" when not).
func (s *Service) ACMEHTTPAddr() string {
	if s.acmeLn == nil {
		return ""
	}
	return s.acmeLn.Addr().String()
}

// retention deletes visit data older than --retention, hourly (and once at start). The
// audit trail is kept.
func (s *Service) retention(ctx context.Context) {
	if s.cfg.Retention <= 0 {
		return
	}
	s.PurgeOld(ctx)
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.PurgeOld(ctx)
		}
	}
}

// PurgeOld deletes the visits (and their participants) scheduled more than --retention
// ago that are over, and records how many in the audit trail.
func (s *Service) PurgeOld(ctx context.Context) {
	if s.cfg.Retention <= 0 {
		return
	}
	n, err := s.store.DeleteVisitsBefore(ctx, s.now().Add(-s.cfg.Retention))
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("retention: cannot delete old visits", "err", err)
		}
		return
	}
	if n > 0 {
		s.log.Info("retention: old visits deleted", "visits", n, "older_than", s.cfg.Retention.String())
		s.recordSystem(ctx, audit.Event{Action: audit.RetentionPurge, Detail: map[string]string{"visits": strconv.Itoa(n), "older_than": s.cfg.Retention.String()}})
	}
}

// publicOrigin is the scheme://host[:port] of a URL.
func publicOrigin(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.IndexByte(u[i+3:], '/'); j >= 0 {
			return u[:i+3+j]
		}
	}
	return u
}

// recordSystem records an event of the server itself.
func (s *Service) recordSystem(ctx context.Context, e audit.Event) {
	e.ActorID, e.ActorRole = "server", "system"
	if err := s.audit.Record(ctx, e); err != nil {
		s.log.Error("audit trail: cannot record", "action", string(e.Action), "err", err)
	}
}

// checkpoints writes a signed audit checkpoint every AuditCheckpointEvery while the trail
// grows. The last one is written by Shutdown.
func (s *Service) checkpoints(ctx context.Context) {
	t := time.NewTicker(s.cfg.AuditCheckpointEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.writeCheckpoint(ctx)
		}
	}
}

func (s *Service) writeCheckpoint(ctx context.Context) {
	cp, written, err := s.cps.Write(ctx, false)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("audit checkpoint failed", "err", err)
		}
		return
	}
	if written {
		// Logged too, so that a log shipper carries it off the machine.
		s.log.Info("audit checkpoint", "size", cp.Size, "hash", hex.EncodeToString(cp.Hash), "file", s.cps.Path())
	}
}

// Checkpoint writes an audit checkpoint now, if the trail grew since the last one (tests).
func (s *Service) Checkpoint(ctx context.Context) { s.writeCheckpoint(ctx) }

// Audit is the audit trail (tests).
func (s *Service) Audit() *audit.Log { return s.audit }

// Addr is the address the web server listens on.
func (s *Service) Addr() net.Addr { return s.ln.Addr() }

// URL is the base URL of the web server as reached on its listen address.
func (s *Service) URL() string {
	scheme := "http"
	if s.cfg.TLS() {
		scheme = "https"
	}
	return scheme + "://" + s.ln.Addr().String()
}

// STUNPort is the UDP port of the embedded STUN server.
func (s *Service) STUNPort() int { return s.turn.Port() }

// TURN is the relay (for tests).
func (s *Service) TURN() *turn.Server { return s.turn }

// MetricsAddr is the address of the metrics listener (nil when off).
func (s *Service) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// Registry is the Prometheus registry of every metric (for tests).
func (s *Service) Registry() *prometheus.Registry { return s.registry }

// SFU is the selective forwarding unit (tests); nil when it is off.
func (s *Service) SFU() *sfu.SFU { return s.sfu }

// Visits is the visit manager (for tests).
func (s *Service) Visits() *visit.Manager { return s.visits }

// PublicURL is the base URL put into links.
func (s *Service) PublicURL() string { return s.cfg.PublicURL }

// Store is the database (for the CLI and tests).
func (s *Service) Store() store.Store { return s.store }

// SignalClients is the number of connected signalling clients.
func (s *Service) SignalClients() int { return s.signal.Clients() }

// Stopped is closed when the web server has stopped serving (after Shutdown, or on a
// listener failure); Err then says why.
func (s *Service) Stopped() <-chan struct{} { return s.served }

// Err is the error the web server stopped with (nil after a clean Shutdown). Read it only
// after Stopped is closed.
func (s *Service) Err() error {
	if errors.Is(s.serveErr, http.ErrServerClosed) {
		return nil
	}
	return s.serveErr
}

// Shutdown stops the service politely: /readyz turns 503, every signalling client is told
// the server is going away (their calls go on browser to browser), HTTP requests finish,
// then the parts close in reverse order. ctx bounds the wait.
func (s *Service) Shutdown(ctx context.Context) error {
	s.web.Drain()
	var errs []error
	if err := s.signal.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("signalling: %w", err))
	}
	if err := s.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http: %w", err))
		s.http.Close()
	}
	if s.acmeHTTP != nil {
		s.acmeHTTP.Close()
	}
	if s.metricsSrv != nil {
		s.metricsSrv.Close()
	}
	s.cancel()
	s.wg.Wait()
	if err := s.Err(); err != nil {
		errs = append(errs, fmt.Errorf("http: %w", err))
	}
	s.writeCheckpoint(context.WithoutCancel(ctx)) // the trail's tail, signed before the store closes
	s.closeParts()
	s.log.Info("bedside stopped")
	return errors.Join(errs...)
}

// closeParts closes what Start opened, in reverse order. Safe on a partly started service.
func (s *Service) closeParts() {
	if s.metricsSrv != nil {
		s.metricsSrv.Close()
	} else if s.metricsLn != nil {
		s.metricsLn.Close()
	}
	if s.sfu != nil {
		s.sfu.Close()
	}
	if s.turn != nil {
		s.turn.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
}
