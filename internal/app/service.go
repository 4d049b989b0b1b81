// Package app wires Bedside together by hand, in order (config -> store -> auth -> visit ->
// turn -> signal -> web), closes it in reverse, and holds the command-line commands.
package app

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

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
	audit  *audit.Log
	cps    *audit.Checkpointer
	visits *visit.Manager
	turn   *turn.Server
	signal *signal.Server
	web    *web.Server
	http   *http.Server
	ln     net.Listener

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
}

// Start opens the database, starts STUN and the web server, and returns once they listen.
// Stop it with Shutdown.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger, opt Options) (svc *Service, err error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &Service{cfg: cfg, log: log, served: make(chan struct{})}
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
	s.visits = visit.NewManager(s.store, visit.Config{LinkTTL: cfg.LinkTTL, Now: opt.Now, Log: log.With("part", "visit"), Audit: s.audit})
	if s.turn, err = turn.Start(turn.Config{STUNAddr: cfg.STUNAddr, ICEHost: cfg.ICEHost, Log: log.With("part", "turn")}); err != nil {
		return nil, err
	}
	s.signal = signal.NewServer(signal.Config{
		Visits:         s.visits,
		ICE:            s.iceConfig,
		OriginPatterns: append([]string{publicOrigin(cfg.PublicURL)}, cfg.Origins()...),
		Audit:          s.audit,
		Log:            log.With("part", "signal"),
		PingEvery:      opt.PingEvery,
		PongWait:       opt.PongWait,
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
		PublicURL: cfg.PublicURL,
		TLS:       cfg.TLS(),
		Log:       log.With("part", "web"),
		Now:       opt.Now,
		Audit:     s.audit,

		AllowedOrigins: cfg.Origins(),
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

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.wg.Add(4)
	go func() { defer s.wg.Done(); s.serveErr = s.http.Serve(s.ln); close(s.served) }()
	go func() { defer s.wg.Done(); s.visits.Run(bg) }()
	go func() { defer s.wg.Done(); s.sweepSessions(bg, opt.Now) }()
	go func() { defer s.wg.Done(); s.checkpoints(bg) }()
	log.Info("bedside serving", "http", s.ln.Addr().String(), "public_url", cfg.PublicURL, "stun_port", s.turn.Port(), "tls", cfg.TLS())
	return s, nil
}

// iceConfig is the ICE configuration each participant gets (see docs/protocol.md).
func (s *Service) iceConfig(store.Participant) signal.ICEConfig {
	var out []signal.ICEServer
	for _, is := range s.turn.ICEServers() {
		out = append(out, signal.ICEServer{URLs: is.URLs, Username: is.Username, Credential: is.Credential})
	}
	if out == nil {
		out = []signal.ICEServer{}
	}
	return signal.ICEConfig{Servers: out, Policy: "all"}
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
	if s.turn != nil {
		s.turn.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
}
