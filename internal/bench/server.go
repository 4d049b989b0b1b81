package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/bedside/bedside/internal/client"
)

// server is the Bedside server being measured.
type server struct {
	url             string
	pid             int
	sfuPort         int    // the SFU's UDP port (0: unknown)
	metrics         string // its metrics URL ("": none)
	email, password string
	child           *child
	dir             string
	logFile         *os.File
}

// startServer starts `bedside serve` in a child process on loopback, with a temporary data
// directory and a clinician account made with `bedside user add` (or uses cfg.Server).
func startServer(ctx context.Context, cfg Config) (*server, error) {
	if cfg.Server != "" {
		return &server{url: strings.TrimRight(cfg.Server, "/"), pid: cfg.ServerPID, email: cfg.Email, password: cfg.Password}, nil
	}
	dir, err := os.MkdirTemp("", "bedside-bench-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, email: "bench-clinician@example.com", password: randomPassword()}
	ok := false
	defer func() {
		if !ok {
			s.stop()
		}
	}()
	add := exec.CommandContext(ctx, cfg.Exe, "user", "add", "--data-dir", dir, "--email", s.email, "--name", "Bench Clinician", "--role", "clinician", "--require-mfa=false")
	add.Stdin = strings.NewReader(s.password + "\n")
	add.Env = environ()
	if out, err := add.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bedside user add: %w: %s", err, out)
	}
	if s.sfuPort, err = freePort("udp"); err != nil {
		return nil, err
	}
	mport, err := freePort("tcp")
	if err != nil {
		return nil, err
	}
	s.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
	args := append([]string{"serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--stun-addr", "127.0.0.1:0",
		"--sfu-udp-addr", fmt.Sprintf("127.0.0.1:%d", s.sfuPort), "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport), "--turn", "off", "--require-mfa=false", "--log-format", "json", "--log-level", "info"}, cfg.ServerArgs...)
	if cfg.ProfileDir != "" {
		args = append(args, "--debug-pprof")
	}
	urls := make(chan string, 1)
	var logf *os.File
	if cfg.ServerLog != "" {
		if logf, err = os.OpenFile(cfg.ServerLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return nil, err
		}
		s.logFile = logf
	}
	s.child, err = startChild("server", cfg.Exe, args, cfg.ServerCPUs, append(environ(), cfg.ServerEnv...), func(line []byte) {
		if logf != nil {
			logf.Write(append(line, '\n'))
		}
		if u, ok := servingURL(line); ok {
			select {
			case urls <- u:
			default:
			}
		}
	})
	if err != nil {
		return nil, err
	}
	select {
	case s.url = <-urls:
	case <-s.child.done:
		return nil, fmt.Errorf("bedside serve exited: %v: %s", s.child.err, s.child.log.String())
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("bedside serve did not start in 30 s: %s", s.child.log.String())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.pid = s.child.pid()
	ok = true
	return s, nil
}

func (s *server) stop() {
	if s.child != nil {
		s.child.stop(10 * time.Second)
	}
	if s.logFile != nil {
		s.logFile.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

func randomPassword() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// createVisit creates a visit with the given media policy ("" for the server's default).
func createVisit(ctx context.Context, c *client.Client, name, policy string) (client.Visit, error) {
	body := map[string]any{"patient_name": name}
	if policy != "" {
		body["policy"] = policy
	}
	var v client.Visit
	err := c.Do(ctx, "POST", "/api/v1/visits", body, &v)
	return v, err
}

// runServer measures the server with the scenario: it creates the visits, joins every
// member over the real protocol, waits for media everywhere, warms up and measures.
func runServer(ctx context.Context, cfg Config, run int) (PhaseResult, error) {
	topo := cfg.topology()
	srv, err := startServer(ctx, cfg)
	if err != nil {
		return PhaseResult{}, err
	}
	defer srv.stop()
	admin := client.New(srv.url)
	if err := admin.SignIn(ctx, srv.email, srv.password); err != nil {
		return PhaseResult{}, fmt.Errorf("sign in as %s: %w", srv.email, err)
	}
	var all []*member
	l := &load{w: &window{}, members: topo.members(), pid: srv.pid, metricsURL: srv.metrics, dbg: cfg.dbg,
		serverCPUs: cfg.ServerCPUs, loadCPUs: cfg.LoadCPUs}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return PhaseResult{}, err
		}
		l.pprofURL = strings.TrimSuffix(srv.metrics, "metrics") + "debug/pprof/"
		l.profilePrefix = filepath.Join(cfg.ProfileDir, fmt.Sprintf("server-%d-", run))
	}
	if srv.sfuPort != 0 {
		l.serverPorts = map[int]bool{srv.sfuPort: true}
	}
	l.clientPorts = func() map[int]bool {
		ports := map[int]bool{}
		for _, m := range all {
			for _, p := range m.stamps.localPorts() {
				ports[p] = true
			}
		}
		return ports
	}
	if srv.pid != 0 {
		if l.rss0, err = procRSS(srv.pid); err != nil {
			return PhaseResult{}, err
		}
	}
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		for _, m := range all {
			m.close()
		}
		wg.Wait()
	}()

	type plan struct {
		visit   client.Visit
		tokens  []string // each member's link (the clinician's is "")
		members []*member
	}
	var plans []plan
	pubIdx := 0
	for ri, room := range topo.rooms {
		v, err := createVisit(ctx, admin, fmt.Sprintf("Bench room %d", ri+1), cfg.Policy)
		if err != nil {
			return PhaseResult{}, fmt.Errorf("create visit: %w", err)
		}
		p := plan{visit: v}
		// The patient link for the second member, guest links for the others:
		// participants if they publish, observers if they only watch.
		for mi, ro := range room {
			var u string
			switch {
			case mi == 0:
			case mi == 1 && ro.publish:
				u = v.PatientURL
			default:
				gr := "observer"
				if ro.publish {
					gr = "participant"
				}
				g, err := admin.Invite(ctx, v.ID, gr)
				if err != nil {
					return PhaseResult{}, fmt.Errorf("invite a guest: %w", err)
				}
				u = g.GuestURL
			}
			tok := ""
			if u != "" {
				if tok, err = client.LinkToken(u); err != nil {
					return PhaseResult{}, err
				}
			}
			p.tokens = append(p.tokens, tok)
		}
		var pubs []*publisher
		for mi, ro := range room {
			m := &member{idx: len(all), room: ri, clinician: mi == 0, subscribe: ro.subscribe, w: l.w, stamps: newRxStamps(), dbg: cfg.dbg, firstRTP: newFirstTime()}
			if m.api, err = newAPI(m.stamps); err != nil {
				return PhaseResult{}, err
			}
			if ro.publish {
				// Simulcast to the SFU (the pub connection sets the writers and starts
				// it); the top layer only between peers.
				m.pub = newPublisher(pubIdx, cfg.Profile, l.w, cfg.Policy == "sfu")
				pubIdx++
				if cfg.Policy == "p2p" {
					if m.audio, m.video, err = p2pTracks(m.pub, fmt.Sprintf("bench-%d", m.idx)); err != nil {
						return PhaseResult{}, err
					}
					m.pub.start()
				}
				pubs = append(pubs, m.pub)
			}
			if m.clinician {
				m.http = admin
			} else {
				m.http = client.New(srv.url)
			}
			p.members = append(p.members, m)
			all = append(all, m)
		}
		want := roomStreams(room, pubs)
		for mi, m := range p.members {
			if m.subscribe {
				l.subs = append(l.subs, &subscriber{wants: want[mi], tracks: m.tracks, state: m.state})
			}
		}
		l.pubs = append(l.pubs, pubs...)
		plans = append(plans, p)
	}

	// Join: in each room the clinician first, then the others one after the other; at
	// most JoinConcurrency members between WebSocket open and first media at a time.
	sem := make(chan struct{}, cfg.JoinConcurrency)
	joinErr := make(chan error, len(plans))
	for _, p := range plans {
		wg.Add(1)
		go func() { // ends when its room has joined (or failed) or lctx ends
			defer wg.Done()
			for i, m := range p.members {
				select {
				case sem <- struct{}{}:
				case <-lctx.Done():
					return
				}
				var err error
				if m.clinician {
					err = m.joinAsClinician(lctx, p.visit.ID)
				} else {
					err = m.joinByLink(lctx, p.tokens[i], fmt.Sprintf("Bench %d", m.idx))
				}
				if err != nil {
					<-sem
					joinErr <- fmt.Errorf("member %d joining: %w", m.idx, err)
					return
				}
				wg.Add(1)
				go func() { defer wg.Done(); m.run(lctx, m.welcome) }() // ends with lctx or the connection
				if m.pub != nil {
					wg.Add(1)
					go func() { defer wg.Done(); m.pub.run(lctx) }() // ends with lctx
				}
				if i == 0 {
					<-sem // the first in gets media only when others come
					continue
				}
				wg.Add(1)
				go func() { // ends at first media, after 10 s or with lctx
					defer wg.Done()
					defer func() { <-sem }()
					select {
					case <-m.firstRTP.done:
					case <-time.After(10 * time.Second):
					case <-lctx.Done():
					}
				}()
			}
		}()
	}
	readyErr := make(chan error, 1)
	go func() { readyErr <- l.ready(lctx, cfg.JoinTimeout) }() // ends by timeout or lctx
	var notReady *errNotReady
	select {
	case err := <-joinErr:
		return PhaseResult{}, err
	case err := <-readyErr:
		switch {
		case errors.As(err, &notReady):
			// Measure anyway: streams that never start count as stalled, whole.
			cfg.progress("warning: %v%s; measuring anyway", err, memberErrors(all))
		case err != nil:
			return PhaseResult{}, fmt.Errorf("%w%s", err, memberErrors(all))
		}
	}
	// Join times: WebSocket open to first RTP, for everyone who joined a room already
	// holding a publisher (not the first in each room).
	for _, p := range plans {
		for _, m := range p.members[1:] {
			if !m.subscribe {
				continue
			}
			select {
			case <-m.firstRTP.done:
				l.joinTimes = append(l.joinTimes, time.Duration(m.firstRTP.at-m.wsOpen))
			default:
			}
		}
	}
	res, err := l.measure(ctx, cfg, "server")
	if err != nil {
		return res, err
	}
	if notReady != nil {
		res.NotStarted = notReady.missing
	}
	if ok, err := srv.exited(); ok {
		return res, fmt.Errorf("the server exited during the run: %v", err)
	}
	return res, nil
}

func (s *server) exited() (bool, error) {
	if s.child == nil {
		return false, nil
	}
	return s.child.exited()
}

func memberErrors(ms []*member) string {
	var errs []error
	for _, m := range ms {
		m.mu.Lock()
		if m.failed != nil && len(errs) < 5 {
			errs = append(errs, fmt.Errorf("member %d: %w", m.idx, m.failed))
		}
		m.mu.Unlock()
	}
	if len(errs) == 0 {
		return ""
	}
	return "; " + errors.Join(errs...).Error()
}

// joinAsClinician opens the signed-in clinician's WebSocket to the visit.
func (m *member) joinAsClinician(ctx context.Context, visitID string) error {
	return m.dial(ctx, visitID)
}

// joinByLink opens the patient link as a new participant and its WebSocket.
func (m *member) joinByLink(ctx context.Context, token, name string) error {
	if _, err := m.http.JoinLink(ctx, token, name); err != nil {
		return fmt.Errorf("link join: %w", err)
	}
	return m.dial(ctx, "")
}

func (m *member) tracks() []*trackRx {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*trackRx(nil), m.rx...)
}

// state describes the member for error messages.
func (m *member) state() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := fmt.Sprintf("member %d (%s, mode %q, %d tracks", m.idx, m.self, m.mode, len(m.rx))
	if s := m.sfu; s != nil {
		s.mu.Lock()
		for name, pc := range map[string]*webrtc.PeerConnection{"pub": s.pub, "sub": s.sub} {
			if pc != nil {
				st += fmt.Sprintf(", %s %s", name, pc.ConnectionState())
			}
		}
		s.mu.Unlock()
	}
	if m.failed != nil {
		st += ", " + m.failed.Error()
	}
	return st + ")"
}
