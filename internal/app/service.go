// Package app wires Bedside together by hand, in order (config -> store -> auth -> visit ->
// turn -> signal -> web), closes it in reverse, and holds the command-line commands.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/config"
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
	visits *visit.Manager
	turn   *turn.Server
	signal *signal.Server
	web    *web.Server
	http   *http.Server
	ln     net.Listener

	rec        audit.Recorder
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
	// PingEvery and PongWait override the signalling liveness timing.
	PingEvery, PongWait time.Duration
	// Recorder receives the audit events (nil: audit.Discard).
	Recorder audit.Recorder
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
	if opt.Recorder == nil {
		opt.Recorder = audit.Discard
	}
	s := &Service{cfg: cfg, log: log, served: make(chan struct{}), rec: opt.Recorder, registry: prometheus.NewRegistry()}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = newAppMetrics(s.registry)
	defer func() {
		if err != nil {
			s.closeParts()
		}
	}()
	if s.store, err = sqlite.Open(ctx, cfg.DataDir); err != nil {
		return nil, err
	}
	sessions, err := auth.NewSessions(s.store, cfg.SessionIdle, cfg.SessionLifetime, opt.Now)
	if err != nil {
		return nil, err
	}
	s.visits = visit.NewManager(s.store, visit.Config{LinkTTL: cfg.LinkTTL, Now: opt.Now, Log: log.With("part", "visit"), Departed: s.departed})
	if s.turn, err = startTURN(cfg, log.With("part", "turn"), s.registry, s.rec, opt.TURNSockets); err != nil {
		return nil, err
	}
	s.signal = signal.NewServer(signal.Config{
		Visits:     s.visits,
		ICE:        s.iceConfig,
		Connection: s.connection,
		Log:        log.With("part", "signal"),
		PingEvery:  opt.PingEvery,
		PongWait:   opt.PongWait,
	})
	if s.ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http-addr: %w", err)
	}
	if strings.HasSuffix(cfg.PublicURL, ":0") {
		// Listening on an ephemeral port (tests): links name the port actually bound.
		cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "0") + strconv.Itoa(s.ln.Addr().(*net.TCPAddr).Port)
		s.cfg.PublicURL = cfg.PublicURL
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
	}); err != nil {
		return nil, err
	}
	s.http = &http.Server{
		Handler:           s.web,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.TLS() {
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
		s.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.metricsSrv.Serve(s.metricsLn) }()
	}

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.serveErr = s.http.Serve(s.ln); close(s.served) }()
	go func() { defer s.wg.Done(); s.visits.Run(bg) }()
	go func() { defer s.wg.Done(); s.sweepSessions(bg, opt.Now) }()
	log.Info("bedside serving", "http", s.ln.Addr().String(), "public_url", cfg.PublicURL, "stun_port", s.turn.Port(),
		"turn", cfg.TURN, "relay", s.turn.Enabled(), "tls", cfg.TLS(), "metrics", cfg.MetricsAddr)
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
	if s.metricsSrv != nil {
		s.metricsSrv.Close()
	}
	s.cancel()
	s.wg.Wait()
	if err := s.Err(); err != nil {
		errs = append(errs, fmt.Errorf("http: %w", err))
	}
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
	if s.turn != nil {
		s.turn.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
}
