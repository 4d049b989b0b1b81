package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// Usage is the help text of `bedside bench`.
const Usage = `Usage: bedside bench [options]

Measures the server's media forwarding under load, on loopback only: pion clients join
visits over the real protocol, publish synthetic Opus and VP8 (a send time in every
payload), subscribe, and report join time (WebSocket open to first RTP), one-way forwarding
latency p50/p99, loss, server CPU per forwarded packet and per forwarded Mbit/s, and server
memory per participant. In the same run, the same packets go through a bare UDP relay (the
floor) with the same rooms, so the server's cost is also a ratio to it. With --srtp-floor,
the relay runs once more with SRTP (AES-256-GCM: it decrypts each packet and encrypts it
for every receiver), which separates the cryptography any SRTP forwarder must do from the
rest of the server's cost.

By default it starts its own server ("bedside serve" in a child process, temporary data
directory, its own clinician account) and removes it afterwards. Server and floor relay run
on --server-cpus, the load clients on --load-cpus.

Scenarios:
  --scenario fanout --subscribers N    one publisher, N subscribers in one visit
  --scenario rooms --rooms N --size 4  N visits of 4, everyone publishing and subscribing

Options:
`

// Command is `bedside bench ARGS`; it returns the exit code.
func Command(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "relay" {
		// The floor relay's process, started by the bench itself.
		if err := RunRelay(ctx, stdin, stdout); err != nil {
			fmt.Fprintln(stderr, "bedside bench relay:", err)
			return 1
		}
		return 0
	}
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Scenario, "scenario", cfg.Scenario, "fanout or rooms")
	fs.IntVar(&cfg.Subscribers, "subscribers", cfg.Subscribers, "fanout: subscribers of the one publisher")
	fs.IntVar(&cfg.Rooms, "rooms", cfg.Rooms, "rooms: number of visits")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "rooms: people per visit (the clinician, the patient, guests)")
	fs.StringVar(&cfg.Policy, "policy", cfg.Policy, "the visits' media policy: sfu, or p2p (the server only signals; for comparison)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "the measured window of each run")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "wait this long after everyone receives media, before measuring")
	fs.IntVar(&cfg.Repeat, "repeat", cfg.Repeat, "runs of floor and server, alternating; medians are reported")
	fs.DurationVar(&cfg.Profile.AudioInterval, "audio-interval", cfg.Profile.AudioInterval, "one Opus packet per interval")
	fs.IntVar(&cfg.Profile.AudioSize, "audio-size", cfg.Profile.AudioSize, "Opus RTP payload bytes")
	fs.IntVar(&cfg.Profile.VideoFPS, "video-fps", cfg.Profile.VideoFPS, "VP8 frames per second (0: audio only)")
	fs.IntVar(&cfg.Profile.VideoPackets, "video-packets", cfg.Profile.VideoPackets, "RTP packets per VP8 frame")
	fs.IntVar(&cfg.Profile.VideoSize, "video-size", cfg.Profile.VideoSize, "VP8 RTP payload bytes")
	fs.DurationVar(&cfg.Profile.KeyframeEvery, "keyframe-every", cfg.Profile.KeyframeEvery, "periodic key frames (0: the first, then only when the server asks)")
	fs.BoolVar(&cfg.Profile.Simulcast, "simulcast", cfg.Profile.Simulcast, "send the camera to the SFU in three layers q, h, f (f: --video-packets x --video-size); false: the top layer alone")
	fs.BoolVar(&cfg.Profile.AnySeq, "any-seq", false, "start RTP sequence numbers anywhere in 0..65535 (default: 1..32767, as Chrome)")
	fs.BoolVar(&cfg.Floor, "floor", cfg.Floor, "measure the bare UDP relay too")
	fs.BoolVar(&cfg.SRTPFloor, "srtp-floor", cfg.SRTPFloor, "measure the SRTP floor too: the relay decrypting and encrypting every packet, as any SRTP forwarder must")
	fs.StringVar(&cfg.Server, "server", "", "URL of a running server to measure instead (loopback only), with --email and --password")
	fs.StringVar(&cfg.Email, "email", "", "--server: a clinician account without a second factor")
	fs.StringVar(&cfg.Password, "password", "", "--server: its password")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "--server: its process id, to read its CPU and memory")
	var serverArgs multiFlag
	fs.Var(&serverArgs, "server-arg", "an extra option for the child server (repeatable), e.g. --server-arg=--log-level=warn")
	var serverEnv multiFlag
	fs.Var(&serverEnv, "server-env", "an extra environment variable KEY=VALUE of the child server (repeatable), e.g. --server-env GOMAXPROCS=2")
	fs.StringVar(&cfg.ProfileDir, "profile", "", "write the child server's Go profiles of each run to this directory: heap at both ends of the window, CPU over it (go tool pprof -sample_index=alloc_space -base server-1-heap-start.pb.gz server-1-heap-end.pb.gz)")
	fs.StringVar(&cfg.ServerLog, "server-log", "", "append the child server's log to this file")
	serverCPUs, loadCPUs := defaultCPUs()
	fs.StringVar(&serverCPUs, "server-cpus", serverCPUs, `CPUs of the server and the floor relay, e.g. "0" ("": not pinned)`)
	fs.StringVar(&loadCPUs, "load-cpus", loadCPUs, `CPUs of the load clients, e.g. "1" ("": not pinned)`)
	fs.IntVar(&cfg.JoinConcurrency, "join-concurrency", cfg.JoinConcurrency, "members between WebSocket open and first media at once")
	fs.DurationVar(&cfg.JoinTimeout, "join-timeout", cfg.JoinTimeout, "how long everyone may take to receive media")
	debug := fs.Bool("debug", false, "print what the load clients see on stderr: signalling events, key frame requests, per track what arrived")
	fs.BoolVar(&cfg.DebugSDP, "debug-sdp", false, "with --debug: the sub connections' offers and answers too")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	jsonOut := fs.String("json-out", "", "also write the report as JSON to this file")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, Usage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "bedside bench: %v (see bedside bench --help)\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bedside bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg.ServerArgs = serverArgs
	cfg.ServerEnv = serverEnv
	var err error
	if cfg.ServerCPUs, err = parseCPUs(serverCPUs); err == nil {
		cfg.LoadCPUs, err = parseCPUs(loadCPUs)
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err == nil && cfg.Server != "" && !loopbackURL(cfg.Server) {
		err = fmt.Errorf("--server %s: the bench runs on loopback only", cfg.Server)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bedside bench: %v\n", err)
		return 2
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	if *debug {
		cfg.Debug = stderr
	}
	rep, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "bedside bench: %v\n", err)
		return 1
	}
	if *asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err == nil && *jsonOut != "" {
		err = writeJSONFile(*jsonOut, rep)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bedside bench: %v\n", err)
		return 1
	}
	return 0
}

// defaultCPUs puts the server on CPU 0 and the load clients on the others, when there are
// at least two.
func defaultCPUs() (server, load string) {
	n := runtime.NumCPU()
	switch {
	case n < 2:
		return "", ""
	case n == 2:
		return "0", "1"
	default:
		return "0", fmt.Sprintf("1-%d", n-1)
	}
}

func loopbackURL(u string) bool {
	for _, p := range []string{"http://127.", "http://localhost:", "http://[::1]:", "https://127.", "https://localhost:", "https://[::1]:"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

func writeJSONFile(name string, rep *Report) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
