// Package bench is `bedside bench`: a load tool of pion clients that join visits over the
// real HTTP API and signalling protocol, publish synthetic VP8 and Opus with a send time in
// every payload, subscribe, and measure join time, forwarding latency, loss, and the
// server's CPU and memory; and, in the same run, the same packets through a bare UDP relay
// (the floor), so that the server's cost can be stated as a ratio to it.
// docs/benchmarks.md ("SFU forwarding") has the method and results.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Scenarios.
const (
	ScenarioRooms  = "rooms"  // Rooms visits of Size people, everyone publishing and subscribing
	ScenarioFanout = "fanout" // one visit: one publisher, Subscribers who only subscribe
)

// Config is one bench run.
type Config struct {
	Scenario    string
	Rooms, Size int // rooms scenario
	Subscribers int // fanout scenario
	// Policy is the visits' media policy: "sfu" (media through the server) or "p2p"
	// (between the clients; the server only signals).
	Policy string

	Duration time.Duration // the measured window
	Warmup   time.Duration // after everyone receives media, before the window
	Repeat   int           // floor and server runs, alternating
	Profile  Profile

	// Server is the URL of a running server to measure, with a clinician account's
	// Email and Password ("" starts `bedside serve` in a child process, with its own
	// account). ServerPID is that server's process, to read its CPU and memory (0: not read).
	Server          string
	Email, Password string
	ServerPID       int
	ServerArgs      []string // extra options for the child server
	ServerEnv       []string // extra environment variables (KEY=VALUE) of the child server
	ServerLog       string   // append the child server's log to this file ("": keep only its tail)
	// ProfileDir: the child server serves Go's profiles (--debug-pprof, on loopback) and
	// the bench writes, per server run, its heap profile at both ends of the window and a
	// CPU profile of the window there ("": none).
	ProfileDir string

	Floor          bool // measure the bare UDP relay too
	SRTPFloor      bool // and the SRTP floor (the relay with SRTP, relay.go)
	RelayInProcess bool // run the floor relay in this process (tests)
	Exe            string

	// CPUs for the server and the floor relay, and for the load clients (this process).
	ServerCPUs, LoadCPUs []int

	JoinConcurrency int           // members joining at once
	JoinTimeout     time.Duration // for everyone to receive media
	Progress        io.Writer     // progress lines (nil: none)
	Debug           io.Writer     // what the load clients see, per event and track (nil: nothing)
	DebugSDP        bool          // with Debug: the sub connections' descriptions too

	dbg *debugLog
}

// DefaultConfig finishes in about a minute (fanout of 10, 2 repeats of floor and server).
func DefaultConfig() Config {
	return Config{
		Scenario: ScenarioFanout, Rooms: 5, Size: 4, Subscribers: 10, Policy: "sfu",
		Duration: 10 * time.Second, Warmup: 3 * time.Second, Repeat: 2, Profile: DefaultProfile(),
		Floor: true, JoinConcurrency: 4, JoinTimeout: 60 * time.Second,
	}
}

// Validate checks the bounds: the bench only ever makes a bounded load on loopback.
func (c Config) Validate() error {
	switch c.Scenario {
	case ScenarioRooms:
		if c.Rooms < 1 || c.Rooms > 500 || c.Size < 2 || c.Size > 16 {
			return fmt.Errorf("rooms: 1 to 500 rooms of 2 to 16")
		}
	case ScenarioFanout:
		if c.Subscribers < 1 || c.Subscribers > 1000 {
			return fmt.Errorf("fanout: 1 to 1000 subscribers")
		}
	default:
		return fmt.Errorf("scenario %q: rooms or fanout", c.Scenario)
	}
	switch c.Policy {
	case "sfu", "p2p":
	default:
		// Not auto: a call that moves to the SFU while it is measured measures the move.
		return fmt.Errorf("policy %q: sfu or p2p", c.Policy)
	}
	if c.Duration < time.Second || c.Duration > 10*time.Minute {
		return fmt.Errorf("duration %v: from 1s to 10m", c.Duration)
	}
	if c.Warmup < 0 || c.Warmup > 5*time.Minute {
		return fmt.Errorf("warm-up %v: up to 5m", c.Warmup)
	}
	if c.Repeat < 1 || c.Repeat > 20 {
		return fmt.Errorf("repeat %d: 1 to 20", c.Repeat)
	}
	if c.Server != "" && (c.Email == "" || c.Password == "") {
		return errors.New("a running server needs --email and --password of a clinician account")
	}
	for _, kv := range c.ServerEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("--server-env %q: KEY=VALUE", kv)
		}
	}
	if c.ProfileDir != "" && c.Server != "" {
		return errors.New("--profile is for the child server, not --server")
	}
	if len(c.ServerEnv) > 0 && c.Server != "" {
		return errors.New("--server-env is for the child server, not --server")
	}
	if c.JoinConcurrency < 1 || c.JoinTimeout < time.Second {
		return errors.New("join concurrency at least 1, join timeout at least 1s")
	}
	return c.Profile.validate()
}

// topology is who is in which room and who publishes and subscribes.
type topology struct {
	rooms [][]role
}

type role struct {
	publish, subscribe bool
}

func (c Config) topology() topology {
	var t topology
	switch c.Scenario {
	case ScenarioRooms:
		for range c.Rooms {
			r := make([]role, c.Size)
			for i := range r {
				r[i] = role{publish: true, subscribe: true}
			}
			t.rooms = append(t.rooms, r)
		}
	case ScenarioFanout:
		r := []role{{publish: true}}
		for range c.Subscribers {
			r = append(r, role{subscribe: true})
		}
		t.rooms = append(t.rooms, r)
	}
	return t
}

func (t topology) members() int {
	n := 0
	for _, r := range t.rooms {
		n += len(r)
	}
	return n
}

// Run runs the bench: for each repeat, the floor (if on), the SRTP floor (if on) and then
// the server, each with a fresh process, the same scenario and the same packets.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Exe = exe
	}
	if len(cfg.LoadCPUs) > 0 {
		if err := pin(0, cfg.LoadCPUs); err != nil {
			return nil, err
		}
		prev := runtime.GOMAXPROCS(len(cfg.LoadCPUs))
		defer runtime.GOMAXPROCS(prev)
	}
	if cfg.Debug != nil {
		cfg.dbg = &debugLog{w: cfg.Debug, sdp: cfg.DebugSDP}
	}
	rep := newReport(cfg)
	for i := range cfg.Repeat {
		var r RunResult
		if cfg.Floor {
			cfg.progress("run %d/%d: floor (bare UDP relay)", i+1, cfg.Repeat)
			f, err := runFloor(ctx, cfg, false)
			if err != nil {
				return rep, fmt.Errorf("floor: %w", err)
			}
			r.Floor = &f
		}
		if cfg.SRTPFloor {
			cfg.progress("run %d/%d: srtp floor (the UDP relay with SRTP)", i+1, cfg.Repeat)
			f, err := runFloor(ctx, cfg, true)
			if err != nil {
				return rep, fmt.Errorf("srtp floor: %w", err)
			}
			r.SRTPFloor = &f
		}
		cfg.progress("run %d/%d: server (policy %s)", i+1, cfg.Repeat, cfg.policyName())
		s, err := runServer(ctx, cfg, i+1)
		if err != nil {
			return rep, fmt.Errorf("server: %w", err)
		}
		r.Server = &s
		rep.add(r)
	}
	rep.summarize()
	return rep, nil
}

func (c Config) policyName() string {
	if c.Policy == "" {
		return "server default"
	}
	return c.Policy
}

func (c Config) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "bench: "+format+"\n", args...)
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// subscriber is what one subscribing member should receive and did.
type subscriber struct {
	wants  []want
	tracks func() []*trackRx
	state  func() string // for error messages: the member and its connections
}

// want is one stream a subscriber should receive: a publisher's audio, or its camera in
// one of the layers listed (the SFU chooses which, and may switch).
type want []uint32

// load is a running phase, ready to be measured.
type load struct {
	w       *window
	pubs    []*publisher
	subs    []*subscriber
	members int
	pid     int   // the process forwarding (0: none to read)
	rss0    int64 // its RSS before anyone joined
	// joinTimes: WebSocket open to first RTP of the members who joined a room that
	// already held a publisher.
	joinTimes []time.Duration
	// The forwarder's UDP ports and the load clients', for the kernel's drop counts; the
	// server's metrics URL ("" for none).
	serverPorts map[int]bool
	clientPorts func() map[int]bool
	metricsURL  string
	// pprofURL is the server's /debug/pprof/ ("": no profiles); profiles are written to
	// profilePrefix + "heap-start.pb.gz" and so on.
	pprofURL, profilePrefix string
	dbg                     *debugLog
	// The CPUs the forwarder and the load clients are pinned to (none: not pinned).
	serverCPUs, loadCPUs []int
}

// counters are what measure reads at both ends of the window.
type counters struct {
	serverDrops, clientDrops int64
	metrics                  map[string]float64
	busyServer, busyLoad     time.Duration // the CPUs' busy time, everyone's
}

func (l *load) counters(ctx context.Context) counters {
	var c counters
	if len(l.serverCPUs) > 0 {
		c.busyServer, _ = cpuBusy(l.serverCPUs)
	}
	if len(l.loadCPUs) > 0 {
		c.busyLoad, _ = cpuBusy(l.loadCPUs)
	}
	if len(l.serverPorts) > 0 {
		c.serverDrops, _ = udpDrops(l.serverPorts)
	}
	if l.clientPorts != nil {
		c.clientDrops, _ = udpDrops(l.clientPorts())
	}
	if l.metricsURL != "" {
		c.metrics, _ = scrapeMetrics(ctx, l.metricsURL, "bedside_sfu_", "go_memstats_", "go_gc_duration_seconds_count")
	}
	return c
}

// errNotReady is ready's error when some streams had no media by the timeout.
type errNotReady struct {
	missing int
	which   string
	timeout time.Duration
}

func (e *errNotReady) Error() string {
	return fmt.Sprintf("after %v, %d subscriber streams still had no media (%s)", e.timeout, e.missing, e.which)
}

// ready waits until every subscriber receives every stream it should (or the timeout:
// *errNotReady).
func (l *load) ready(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		var which []string
		for _, s := range l.subs {
			got := map[uint32]bool{}
			for _, t := range s.tracks() {
				t.mu.Lock()
				for id := range t.any {
					got[id] = true
				}
				t.mu.Unlock()
			}
			for _, w := range s.wants {
				if !slices.ContainsFunc(w, func(id uint32) bool { return got[id] }) {
					missing++
					if len(which) < 5 && s.state != nil {
						which = append(which, fmt.Sprintf("stream %x at %s", w[0], s.state()))
					}
				}
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return &errNotReady{missing: missing, which: strings.Join(which, "; "), timeout: timeout}
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// measure warms up, then measures one window.
func (l *load) measure(ctx context.Context, cfg Config, name string) (PhaseResult, error) {
	if err := sleep(ctx, cfg.Warmup); err != nil {
		return PhaseResult{}, err
	}
	self := os.Getpid()
	var cpu0, run0, wait0, self0 time.Duration
	var err error
	if l.pid != 0 {
		if cpu0, err = procCPU(l.pid); err != nil {
			return PhaseResult{}, err
		}
		if run0, wait0, err = procSched(l.pid); err != nil {
			return PhaseResult{}, err
		}
	}
	self0, _, _ = procSched(self)
	c0 := l.counters(ctx)
	var profErr chan error
	if l.pprofURL != "" {
		if err := saveProfile(ctx, l.pprofURL+"heap", l.profilePrefix+"heap-start.pb.gz"); err != nil {
			return PhaseResult{}, err
		}
		profErr = make(chan error, 1)
		go func() { // ends when the profile (of the window's length) is written
			profErr <- saveProfile(ctx, fmt.Sprintf("%sprofile?seconds=%d", l.pprofURL, max(1, int(cfg.Duration.Seconds()))), l.profilePrefix+"cpu.pb.gz")
		}()
	}
	t0 := time.Now()
	l.w.start.Store(now())
	if err := sleep(ctx, cfg.Duration); err != nil {
		return PhaseResult{}, err
	}
	l.w.end.Store(now())
	elapsed := time.Since(t0)
	if profErr != nil {
		if err := saveProfile(ctx, l.pprofURL+"heap", l.profilePrefix+"heap-end.pb.gz"); err != nil {
			return PhaseResult{}, err
		}
		if err := <-profErr; err != nil {
			return PhaseResult{}, err
		}
	}
	res := PhaseResult{Name: name, Participants: l.members, Window: elapsed.Seconds()}
	if l.pid != 0 {
		cpu1, err := procCPU(l.pid)
		if err != nil {
			return PhaseResult{}, err
		}
		run1, wait1, err := procSched(l.pid)
		if err != nil {
			return PhaseResult{}, err
		}
		res.ServerCPU = (run1 - run0).Seconds()
		res.ServerCPUTicks = (cpu1 - cpu0).Seconds()
		res.ServerWait = (wait1 - wait0).Seconds()
		if rss, err := procRSS(l.pid); err == nil {
			res.RSSBefore, res.RSSAfter = l.rss0, rss
		}
	}
	self1, _, _ := procSched(self)
	res.LoadCPU = (self1 - self0).Seconds()
	c1 := l.counters(ctx)
	// What else ran on the pinned CPUs: other processes of this machine (it is shared).
	if len(l.serverCPUs) > 0 {
		res.OtherOnServerCPUs = max(0, (c1.busyServer-c0.busyServer).Seconds()-res.ServerCPU) / elapsed.Seconds() / float64(len(l.serverCPUs))
	}
	if len(l.loadCPUs) > 0 {
		res.OtherOnLoadCPUs = max(0, (c1.busyLoad-c0.busyLoad).Seconds()-res.LoadCPU) / elapsed.Seconds() / float64(len(l.loadCPUs))
	}
	res.ServerSocketDrops = c1.serverDrops - c0.serverDrops
	res.ClientSocketDrops = c1.clientDrops - c0.clientDrops
	if c0.metrics != nil && c1.metrics != nil {
		res.SFUForwarded = c1.metrics[`bedside_sfu_forwarded_packets_total{kind="audio"}`] + c1.metrics[`bedside_sfu_forwarded_packets_total{kind="video"}`] -
			c0.metrics[`bedside_sfu_forwarded_packets_total{kind="audio"}`] - c0.metrics[`bedside_sfu_forwarded_packets_total{kind="video"}`]
		if fwd := res.SFUForwarded; fwd > 0 {
			d := func(k string) float64 { return c1.metrics[k] - c0.metrics[k] }
			res.AllocsPerPacket = d("go_memstats_mallocs_total") / fwd
			res.BytesPerPacket = d("go_memstats_alloc_bytes_total") / fwd
			res.GCs = d("go_gc_duration_seconds_count")
			res.HeapAlloc = c1.metrics["go_memstats_heap_alloc_bytes"]
		}
		res.SFUDropped = map[string]float64{}
		for k, v := range c1.metrics {
			if reason, ok := strings.CutPrefix(k, `bedside_sfu_dropped_packets_total{reason="`); ok {
				res.SFUDropped[strings.TrimSuffix(reason, `"}`)] = v - c0.metrics[k]
			}
		}
	}
	// Packets sent at the end of the window may still be on their way.
	if err := sleep(ctx, 500*time.Millisecond); err != nil {
		return PhaseResult{}, err
	}
	res.joins = l.joinTimes
	res.collect(l)
	return res, nil
}

// collect reads the publishers' and subscribers' counts.
func (r *PhaseResult) collect(l *load) {
	sent := map[uint32]int64{}
	for _, p := range l.pubs {
		for _, s := range p.streams() {
			sent[s.id] = s.inWindow.Load()
		}
		r.WriteErrors += p.errs.Load()
	}
	var lat, latSock []int64
	var lost int64
	var seqExpected, seqReceived int64
	top := map[uint32]bool{} // the top layers' stream ids
	for _, p := range l.pubs {
		if len(p.video) > 0 {
			top[p.video[len(p.video)-1].id] = true
		}
	}
	var videoPkts, topPkts int64
	for _, s := range l.subs {
		got := map[uint32]int64{}  // packets per publisher stream
		span := map[uint32]int64{} // counters spanned by the runs of each publisher stream
		for _, t := range s.tracks() {
			t.mu.Lock()
			r.Received += t.packets
			r.Duplicates += t.dups
			r.Bytes += t.bytes
			lat = append(lat, t.lat...)
			latSock = append(latSock, t.latSock...)
			r.NoSocketTime += t.noSock
			r.SeqJumps += t.jumps
			if t.packets > 0 {
				seqExpected += t.seqMax - t.seqMin + 1
				seqReceived += t.packets + t.padding
				if l.dbg != nil {
					ls := slices.Sorted(slices.Values(t.latSock))
					line := fmt.Sprintf("%s track: packets %d, latency p50 %d p99 %d max %d us, RTP sequence numbers %d..%d, jumps %d %v, duplicates %d; stream:packets/counters spanned",
						r.Name, t.packets, quantile(ls, .5)/1000, quantile(ls, .99)/1000, quantile(ls, 1)/1000, t.seqMin, t.seqMax, t.jumps, t.jumpEx, t.dups)
					for id, rt := range t.runTotals() {
						line += fmt.Sprintf(" %x:%d/%d", id, rt.packets, rt.span)
					}
					l.dbg.printf("%s", line)
				}
			}
			for id, rt := range t.runTotals() {
				span[id] += rt.span
			}
			for id, sn := range t.byStr {
				n := sn.count()
				got[id] += n
				if streamKind(id) == kindVideo {
					videoPkts += n
					if top[id] {
						topPkts += n
					}
				}
			}
			t.mu.Unlock()
		}
		// Each stream (each layer received of a camera) is expected over its runs: from
		// the first to the last packet of each stretch of it that arrived in the window
		// (between layer switches); a stream of which nothing arrived (a stall, a paused
		// video) is expected whole: what the publisher sent.
		for _, w := range s.wants {
			var exp, rec, most int64
			for _, id := range w {
				exp += span[id]
				rec += got[id]
				most = max(most, sent[id])
			}
			if rec == 0 {
				exp = most
				r.Stalled++
			}
			r.Expected += exp
			lost += max(0, exp-rec)
			if exp > 0 {
				r.WorstLoss = max(r.WorstLoss, float64(max(0, exp-rec))/float64(exp))
			}
		}
	}
	if videoPkts > 0 {
		r.TopLayerShare = float64(topPkts) / float64(videoPkts)
	}
	r.Sent = 0
	for _, n := range sent {
		r.Sent += n
	}
	if r.Expected > 0 {
		r.Loss = float64(lost) / float64(r.Expected)
	}
	if seqExpected > 0 {
		r.SeqLoss = 1 - float64(min(seqReceived, seqExpected))/float64(seqExpected)
	}
	slices.Sort(lat)
	slices.Sort(latSock)
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	r.LatencyP50, r.LatencyP90, r.LatencyP99, r.LatencyP999 = us(quantile(latSock, .5)), us(quantile(latSock, .9)), us(quantile(latSock, .99)), us(quantile(latSock, .999))
	if len(latSock) > 0 {
		r.LatencyMax = us(latSock[len(latSock)-1])
	}
	r.AppLatencyP50, r.AppLatencyP99 = us(quantile(lat, .5)), us(quantile(lat, .99))
	if len(lat) > 0 {
		r.AppLatencyMax = us(lat[len(lat)-1])
	}
	r.finish()
}
