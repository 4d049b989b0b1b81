package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// PhaseResult is one measured window of one path (the floor relay or the server).
type PhaseResult struct {
	Name         string  `json:"name"` // "floor" or "server"
	Participants int     `json:"participants"`
	Window       float64 `json:"window_s"`

	// Packets: sent by the publishers in the window (all layers); expected at the
	// subscribers; received (each once); duplicates; RTP bytes received.
	Sent       int64 `json:"sent"`
	Expected   int64 `json:"expected"`
	Received   int64 `json:"received"`
	Duplicates int64 `json:"duplicates"`
	Bytes      int64 `json:"bytes"`
	// Loss: per subscriber and publisher stream (each simulcast layer received), the gaps
	// in the publisher's packet counters between the first and the last packet that
	// arrived in the window; a stream of which nothing arrived (Stalled) counts whole.
	// SeqLoss: the same from the RTP sequence numbers each subscriber saw (rewritten by the
	// SFU). WorstLoss: the worst of any one subscriber's streams. TopLayerShare: of the
	// video packets received, those of the top simulcast layer (below 1: the SFU sent
	// lower layers, for its bandwidth estimate).
	Loss          float64 `json:"loss"`
	SeqLoss       float64 `json:"seq_loss"`
	WorstLoss     float64 `json:"worst_loss"`
	Stalled       int     `json:"stalled"`
	SeqJumps      int64   `json:"seq_jumps"`             // RTP sequence numbers stepping by more than 1000 between packets
	NotStarted    int     `json:"not_started,omitempty"` // streams without media by the join timeout
	TopLayerShare float64 `json:"top_layer_share"`

	// Where packets were lost: datagrams the kernel dropped at the forwarder's socket and
	// at the load clients' sockets (receive buffers full: a reader fell behind), and the
	// SFU's own counts from its metrics (forwarded, and dropped by reason).
	ServerSocketDrops int64   `json:"server_socket_drops"`
	ClientSocketDrops int64   `json:"client_socket_drops"`
	SFUForwarded      float64 `json:"sfu_forwarded,omitempty"`
	// The server's Go heap, from its metrics: allocations and bytes allocated in the
	// window per forwarded packet, garbage collections in the window, the heap in use
	// (live and not yet collected) at the end of the window.
	AllocsPerPacket float64            `json:"allocs_per_packet,omitempty"`
	BytesPerPacket  float64            `json:"alloc_bytes_per_packet,omitempty"`
	GCs             float64            `json:"gcs,omitempty"`
	HeapAlloc       float64            `json:"heap_alloc_bytes,omitempty"`
	SFUDropped      map[string]float64 `json:"sfu_dropped,omitempty"`

	ForwardedPPS  float64 `json:"forwarded_pps"`
	ForwardedMbps float64 `json:"forwarded_mbps"`

	// One-way latency, microseconds: from the publisher's send time (taken just before
	// its write) to the kernel's receive time on the subscriber's socket. NoSocketTime:
	// packets without a socket receive time (left out of these).
	LatencyP50   float64 `json:"latency_p50_us"`
	LatencyP90   float64 `json:"latency_p90_us"`
	LatencyP99   float64 `json:"latency_p99_us"`
	LatencyP999  float64 `json:"latency_p999_us"`
	LatencyMax   float64 `json:"latency_max_us"`
	NoSocketTime int64   `json:"no_socket_time"`
	// The same to the subscriber's read (pion's track reader, after SRTP decryption, or the
	// floor's socket read): the load clients' own work and queueing included.
	AppLatencyP50 float64 `json:"app_latency_p50_us"`
	AppLatencyP99 float64 `json:"app_latency_p99_us"`
	AppLatencyMax float64 `json:"app_latency_max_us"`

	// The forwarding process: CPU seconds in the window (its threads' run time from
	// schedstat; ServerCPUTicks is utime + stime from /proc/<pid>/stat, 10 ms steps), its
	// share of one core, per forwarded packet (microseconds) and per forwarded Mbit/s
	// (percent of a core); ServerWait: seconds its threads waited for a CPU while
	// runnable (other processes on its CPU); RSS before anyone joined and at the end of
	// the window.
	ServerCPU      float64 `json:"server_cpu_s"`
	ServerCPUTicks float64 `json:"server_cpu_ticks_s"`
	ServerWait     float64 `json:"server_runqueue_wait_s"`
	ServerUtil     float64 `json:"server_cpu_util"`
	CPUPerPacket   float64 `json:"cpu_per_packet_us"`
	CPUPerMbps     float64 `json:"cpu_pct_per_mbps"`
	RSSBefore      int64   `json:"rss_before"`
	RSSAfter       int64   `json:"rss_after"`
	MemPerMember   float64 `json:"mem_per_participant"`
	// Other processes' share of the pinned CPUs in the window (per CPU, 0 to 1): the noise
	// of a shared machine, from /proc/stat minus our own processes' CPU time.
	OtherOnServerCPUs float64 `json:"other_on_server_cpus"`
	OtherOnLoadCPUs   float64 `json:"other_on_load_cpus"`
	LoadCPU           float64 `json:"load_cpu_s"`
	LoadUtil          float64 `json:"load_cpu_util"`
	WriteErrors       int64   `json:"write_errors"`
	JoinP50           float64 `json:"join_p50_ms"`
	JoinP99           float64 `json:"join_p99_ms"`
	JoinMax           float64 `json:"join_max_ms"`
	JoinsMeasured     int     `json:"joins_measured"`
	joins             []time.Duration
}

func (r *PhaseResult) finish() {
	if r.Window > 0 {
		r.ForwardedPPS = float64(r.Received) / r.Window
		r.ForwardedMbps = float64(r.Bytes) * 8 / 1e6 / r.Window
		r.ServerUtil = r.ServerCPU / r.Window
		r.LoadUtil = r.LoadCPU / r.Window
	}
	if r.Received > 0 && r.ServerCPU > 0 {
		r.CPUPerPacket = r.ServerCPU / float64(r.Received) * 1e6
		r.CPUPerMbps = 100 * r.ServerUtil / r.ForwardedMbps
	}
	if r.RSSAfter > 0 && r.Participants > 0 {
		r.MemPerMember = float64(r.RSSAfter-r.RSSBefore) / float64(r.Participants)
	}
	if len(r.joins) > 0 {
		slices.Sort(r.joins)
		ns := make([]int64, len(r.joins))
		for i, d := range r.joins {
			ns[i] = int64(d)
		}
		ms := func(v int64) float64 { return float64(v) / 1e6 }
		r.JoinP50, r.JoinP99, r.JoinMax = ms(quantile(ns, .5)), ms(quantile(ns, .99)), ms(ns[len(ns)-1])
		r.JoinsMeasured = len(ns)
	}
}

// RunResult is one repeat: the floor, the SRTP floor and the server, one after the other.
type RunResult struct {
	Floor     *PhaseResult `json:"floor,omitempty"`
	SRTPFloor *PhaseResult `json:"srtp_floor,omitempty"`
	Server    *PhaseResult `json:"server"`
	// Server / floor, when both were measured.
	CPUPerPacketRatio float64 `json:"cpu_per_packet_ratio,omitempty"`
	LatencyP50Ratio   float64 `json:"latency_p50_ratio,omitempty"`
	LatencyP99Ratio   float64 `json:"latency_p99_ratio,omitempty"`
	// CPU per forwarded packet, SRTP floor / floor and server / SRTP floor, when measured.
	SRTPFloorCPURatio float64 `json:"srtp_floor_cpu_ratio,omitempty"`
	ServerSRTPRatio   float64 `json:"server_srtp_floor_cpu_ratio,omitempty"`
}

// Summary is the medians over the repeats.
type Summary struct {
	Floor             *PhaseResult `json:"floor,omitempty"`
	SRTPFloor         *PhaseResult `json:"srtp_floor,omitempty"`
	Server            *PhaseResult `json:"server"`
	CPUPerPacketRatio float64      `json:"cpu_per_packet_ratio,omitempty"`
	LatencyP50Ratio   float64      `json:"latency_p50_ratio,omitempty"`
	LatencyP99Ratio   float64      `json:"latency_p99_ratio,omitempty"`
	SRTPFloorCPURatio float64      `json:"srtp_floor_cpu_ratio,omitempty"`
	ServerSRTPRatio   float64      `json:"server_srtp_floor_cpu_ratio,omitempty"`
}

// Report is a whole bench run.
type Report struct {
	Started  time.Time   `json:"started"`
	Machine  Machine     `json:"machine"`
	Scenario ScenarioDoc `json:"scenario"`
	Runs     []RunResult `json:"runs"`
	Median   Summary     `json:"median"`
}

// Machine says where the figures come from.
type Machine struct {
	CPUs       int      `json:"cpus"`
	Model      string   `json:"cpu_model"`
	Kernel     string   `json:"kernel"`
	Go         string   `json:"go"`
	Build      string   `json:"build"` // the commit and the PGO profile of the binary measured
	ServerCPUs []int    `json:"server_cpus"`
	LoadCPUs   []int    `json:"load_cpus"`
	ServerEnv  []string `json:"server_env,omitempty"` // --server-env
}

// ScenarioDoc is the configuration that shapes the figures.
type ScenarioDoc struct {
	Scenario      string  `json:"scenario"`
	Rooms         int     `json:"rooms,omitempty"`
	Size          int     `json:"size,omitempty"`
	Subscribers   int     `json:"subscribers,omitempty"`
	Policy        string  `json:"policy"`
	Participants  int     `json:"participants"`
	Duration      float64 `json:"duration_s"`
	Warmup        float64 `json:"warmup_s"`
	Repeat        int     `json:"repeat"`
	AudioInterval float64 `json:"audio_interval_ms"`
	AudioSize     int     `json:"audio_size"`
	VideoFPS      int     `json:"video_fps"`
	VideoPackets  int     `json:"video_packets_per_frame"`
	VideoSize     int     `json:"video_size"`
	VideoLayers   int     `json:"video_layers"`
	PublisherPPS  float64 `json:"publisher_pps"`
	PublisherKbps float64 `json:"publisher_kbps"`
}

// buildOf says which build of bedside is measured (the server runs as a child process of
// the same executable): its commit ("commit unknown" for `go run`, or a build with
// -buildvcs=false, which stamp none), with "+changes" when the tree had uncommitted
// changes, and the profile it was built with (`go build -pgo=FILE`; "pgo off" for none),
// so that the figures of two builds of one commit are not confused (docs/benchmarks.md,
// "Profile-guided optimisation").
func buildOf() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return describeBuild(bi.Settings)
}

func describeBuild(settings []debug.BuildSetting) string {
	commit, pgo := "commit unknown", "pgo off"
	changes := false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
			if len(commit) > 12 {
				commit = commit[:12]
			}
		case "vcs.modified":
			changes = s.Value == "true"
		case "-pgo":
			pgo = "pgo " + filepath.Base(s.Value)
		}
	}
	if changes {
		commit += "+changes"
	}
	return commit + ", " + pgo
}

func newReport(cfg Config) *Report {
	t := cfg.topology()
	r := &Report{
		Started: time.Now().UTC(),
		Machine: Machine{CPUs: runtime.NumCPU(), Model: cpuModel(), Kernel: kernel(), Go: runtime.Version(), Build: buildOf(), ServerCPUs: cfg.ServerCPUs, LoadCPUs: cfg.LoadCPUs, ServerEnv: cfg.ServerEnv},
		Scenario: ScenarioDoc{
			Scenario: cfg.Scenario, Policy: cfg.policyName(), Participants: t.members(),
			Duration: cfg.Duration.Seconds(), Warmup: cfg.Warmup.Seconds(), Repeat: cfg.Repeat,
			AudioInterval: float64(cfg.Profile.AudioInterval) / 1e6, AudioSize: cfg.Profile.AudioSize,
			VideoFPS: cfg.Profile.VideoFPS, VideoPackets: cfg.Profile.VideoPackets, VideoSize: cfg.Profile.VideoSize, VideoLayers: len(cfg.Profile.layers(cfg.Policy == "sfu")),
			PublisherPPS: cfg.Profile.PacketsPerSecond(), PublisherKbps: cfg.Profile.BitsPerSecond() / 1e3,
		},
	}
	if cfg.Scenario == ScenarioRooms {
		r.Scenario.Rooms, r.Scenario.Size = cfg.Rooms, cfg.Size
	} else {
		r.Scenario.Subscribers = cfg.Subscribers
	}
	return r
}

func (r *Report) add(run RunResult) {
	if run.Floor != nil && run.Server != nil {
		run.CPUPerPacketRatio = ratio(run.Server.CPUPerPacket, run.Floor.CPUPerPacket)
		run.LatencyP50Ratio = ratio(run.Server.LatencyP50, run.Floor.LatencyP50)
		run.LatencyP99Ratio = ratio(run.Server.LatencyP99, run.Floor.LatencyP99)
	}
	if run.SRTPFloor != nil {
		if run.Floor != nil {
			run.SRTPFloorCPURatio = ratio(run.SRTPFloor.CPUPerPacket, run.Floor.CPUPerPacket)
		}
		if run.Server != nil {
			run.ServerSRTPRatio = ratio(run.Server.CPUPerPacket, run.SRTPFloor.CPUPerPacket)
		}
	}
	r.Runs = append(r.Runs, run)
}

func ratio(a, b float64) float64 {
	if a == 0 || b == 0 {
		return 0
	}
	return a / b
}

// summarize fills Median: every figure's median over the repeats, and the median of the
// per-run ratios (not the ratio of medians).
func (r *Report) summarize() {
	var floors, srtpFloors, servers []*PhaseResult
	var cpuR, p50R, p99R, srtpR, serverSRTPR []float64
	for _, run := range r.Runs {
		if run.Floor != nil {
			floors = append(floors, run.Floor)
		}
		if run.SRTPFloor != nil {
			srtpFloors = append(srtpFloors, run.SRTPFloor)
		}
		if run.SRTPFloorCPURatio > 0 {
			srtpR = append(srtpR, run.SRTPFloorCPURatio)
		}
		if run.ServerSRTPRatio > 0 {
			serverSRTPR = append(serverSRTPR, run.ServerSRTPRatio)
		}
		servers = append(servers, run.Server)
		if run.CPUPerPacketRatio > 0 {
			cpuR = append(cpuR, run.CPUPerPacketRatio)
		}
		if run.LatencyP50Ratio > 0 {
			p50R = append(p50R, run.LatencyP50Ratio)
			p99R = append(p99R, run.LatencyP99Ratio)
		}
	}
	r.Median.Server = medianPhase(servers)
	if len(floors) > 0 {
		r.Median.Floor = medianPhase(floors)
	}
	if len(srtpFloors) > 0 {
		r.Median.SRTPFloor = medianPhase(srtpFloors)
	}
	r.Median.SRTPFloorCPURatio = zeroNaN(median(srtpR))
	r.Median.ServerSRTPRatio = zeroNaN(median(serverSRTPR))
	r.Median.CPUPerPacketRatio = zeroNaN(median(cpuR))
	r.Median.LatencyP50Ratio = zeroNaN(median(p50R))
	r.Median.LatencyP99Ratio = zeroNaN(median(p99R))
}

func zeroNaN(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

// medianPhase is the field-by-field median of phases (counts included).
func medianPhase(ps []*PhaseResult) *PhaseResult {
	if len(ps) == 0 {
		return nil
	}
	m := &PhaseResult{Name: ps[0].Name + " (median)", Participants: ps[0].Participants}
	f := func(get func(*PhaseResult) float64) float64 {
		v := make([]float64, len(ps))
		for i, p := range ps {
			v[i] = get(p)
		}
		return median(v)
	}
	i := func(get func(*PhaseResult) int64) int64 {
		return int64(f(func(p *PhaseResult) float64 { return float64(get(p)) }))
	}
	m.Window = f(func(p *PhaseResult) float64 { return p.Window })
	m.Sent = i(func(p *PhaseResult) int64 { return p.Sent })
	m.Expected = i(func(p *PhaseResult) int64 { return p.Expected })
	m.Received = i(func(p *PhaseResult) int64 { return p.Received })
	m.Duplicates = i(func(p *PhaseResult) int64 { return p.Duplicates })
	m.Bytes = i(func(p *PhaseResult) int64 { return p.Bytes })
	m.Loss = f(func(p *PhaseResult) float64 { return p.Loss })
	m.ServerSocketDrops = i(func(p *PhaseResult) int64 { return p.ServerSocketDrops })
	m.ClientSocketDrops = i(func(p *PhaseResult) int64 { return p.ClientSocketDrops })
	m.SFUForwarded = f(func(p *PhaseResult) float64 { return p.SFUForwarded })
	m.AllocsPerPacket = f(func(p *PhaseResult) float64 { return p.AllocsPerPacket })
	m.BytesPerPacket = f(func(p *PhaseResult) float64 { return p.BytesPerPacket })
	m.GCs = f(func(p *PhaseResult) float64 { return p.GCs })
	m.HeapAlloc = f(func(p *PhaseResult) float64 { return p.HeapAlloc })
	m.SeqLoss = f(func(p *PhaseResult) float64 { return p.SeqLoss })
	m.Stalled = int(f(func(p *PhaseResult) float64 { return float64(p.Stalled) }))
	m.SeqJumps = i(func(p *PhaseResult) int64 { return p.SeqJumps })
	m.NotStarted = int(f(func(p *PhaseResult) float64 { return float64(p.NotStarted) }))
	m.TopLayerShare = f(func(p *PhaseResult) float64 { return p.TopLayerShare })
	m.WorstLoss = f(func(p *PhaseResult) float64 { return p.WorstLoss })
	m.ForwardedPPS = f(func(p *PhaseResult) float64 { return p.ForwardedPPS })
	m.ForwardedMbps = f(func(p *PhaseResult) float64 { return p.ForwardedMbps })
	m.LatencyP50 = f(func(p *PhaseResult) float64 { return p.LatencyP50 })
	m.LatencyP90 = f(func(p *PhaseResult) float64 { return p.LatencyP90 })
	m.LatencyP99 = f(func(p *PhaseResult) float64 { return p.LatencyP99 })
	m.LatencyP999 = f(func(p *PhaseResult) float64 { return p.LatencyP999 })
	m.LatencyMax = f(func(p *PhaseResult) float64 { return p.LatencyMax })
	m.NoSocketTime = i(func(p *PhaseResult) int64 { return p.NoSocketTime })
	m.AppLatencyP50 = f(func(p *PhaseResult) float64 { return p.AppLatencyP50 })
	m.AppLatencyP99 = f(func(p *PhaseResult) float64 { return p.AppLatencyP99 })
	m.AppLatencyMax = f(func(p *PhaseResult) float64 { return p.AppLatencyMax })
	m.ServerCPU = f(func(p *PhaseResult) float64 { return p.ServerCPU })
	m.ServerUtil = f(func(p *PhaseResult) float64 { return p.ServerUtil })
	m.ServerCPUTicks = f(func(p *PhaseResult) float64 { return p.ServerCPUTicks })
	m.ServerWait = f(func(p *PhaseResult) float64 { return p.ServerWait })
	m.CPUPerPacket = f(func(p *PhaseResult) float64 { return p.CPUPerPacket })
	m.CPUPerMbps = f(func(p *PhaseResult) float64 { return p.CPUPerMbps })
	m.RSSBefore = i(func(p *PhaseResult) int64 { return p.RSSBefore })
	m.RSSAfter = i(func(p *PhaseResult) int64 { return p.RSSAfter })
	m.MemPerMember = f(func(p *PhaseResult) float64 { return p.MemPerMember })
	m.LoadCPU = f(func(p *PhaseResult) float64 { return p.LoadCPU })
	m.OtherOnServerCPUs = f(func(p *PhaseResult) float64 { return p.OtherOnServerCPUs })
	m.OtherOnLoadCPUs = f(func(p *PhaseResult) float64 { return p.OtherOnLoadCPUs })
	m.LoadUtil = f(func(p *PhaseResult) float64 { return p.LoadUtil })
	m.WriteErrors = i(func(p *PhaseResult) int64 { return p.WriteErrors })
	m.JoinP50 = f(func(p *PhaseResult) float64 { return p.JoinP50 })
	m.JoinP99 = f(func(p *PhaseResult) float64 { return p.JoinP99 })
	m.JoinMax = f(func(p *PhaseResult) float64 { return p.JoinMax })
	m.JoinsMeasured = int(f(func(p *PhaseResult) float64 { return float64(p.JoinsMeasured) }))
	return m
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the human summary: the setting, one row per path and repeat, the
// medians, and the ratios to the floor.
func (r *Report) WriteText(w io.Writer) error {
	s := r.Scenario
	what := fmt.Sprintf("fanout: 1 publisher, %d subscribers", s.Subscribers)
	if s.Scenario == ScenarioRooms {
		what = fmt.Sprintf("rooms: %d visits of %d, everyone publishing", s.Rooms, s.Size)
	}
	fmt.Fprintf(w, "# bedside bench %s: %s (%d participants), policy %s\n", r.Started.Format(time.RFC3339), what, s.Participants, s.Policy)
	fmt.Fprintf(w, "# per publisher and subscriber: Opus %d B every %g ms + VP8 %d fps x %d packets of %d B = %.0f packets/s, %.0f kbit/s (the top of %d simulcast layers to the SFU; the floor relay gets the top layer only)\n",
		s.AudioSize, s.AudioInterval, s.VideoFPS, s.VideoPackets, s.VideoSize, s.PublisherPPS, s.PublisherKbps, s.VideoLayers)
	fmt.Fprintf(w, "# %d CPUs (%s), %s, %s; server and floor relay on CPUs %v, load clients on CPUs %v\n",
		r.Machine.CPUs, r.Machine.Model, r.Machine.Kernel, r.Machine.Go, cpuList(r.Machine.ServerCPUs), cpuList(r.Machine.LoadCPUs))
	fmt.Fprintf(w, "# build: %s\n", r.Machine.Build)
	if len(r.Machine.ServerEnv) > 0 {
		fmt.Fprintf(w, "# server environment: %s\n", strings.Join(r.Machine.ServerEnv, " "))
	}
	fmt.Fprintf(w, "# window %gs after %gs warm-up, %d repeat(s)\n\n", s.Duration, s.Warmup, s.Repeat)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tpath\tfwd pkt/s\tfwd Mbit/s\tloss\tworst\ttop layer\tp50 us\tp99 us\tmax us\tread p99 us\tsrv CPU\tothers\tus/pkt\tcore%/Mbit/s\tKiB/member\tjoin p50 ms\tjoin p99 ms\tload CPU\tothers\t")
	row := func(run string, p *PhaseResult) {
		if p == nil {
			return
		}
		join50, join99 := "-", "-"
		if p.JoinsMeasured > 0 {
			join50, join99 = fmt.Sprintf("%.0f", p.JoinP50), fmt.Sprintf("%.0f", p.JoinP99)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f\t%s\t%s\t%.0f%%\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f%%\t%.1f%%\t%.2f\t%.2f\t%.0f\t%s\t%s\t%.0f%%\t%.0f%%\t\n",
			run, strings.TrimSuffix(p.Name, " (median)"), p.ForwardedPPS, p.ForwardedMbps, pct(p.Loss), pct(p.WorstLoss), 100*p.TopLayerShare,
			p.LatencyP50, p.LatencyP99, p.LatencyMax, p.AppLatencyP99, 100*p.ServerUtil, 100*p.OtherOnServerCPUs, p.CPUPerPacket, p.CPUPerMbps, p.MemPerMember/1024,
			join50, join99, 100*p.LoadUtil, 100*p.OtherOnLoadCPUs)
	}
	for i, run := range r.Runs {
		row(fmt.Sprint(i+1), run.Floor)
		row(fmt.Sprint(i+1), run.SRTPFloor)
		row(fmt.Sprint(i+1), run.Server)
	}
	row("median", r.Median.Floor)
	row("median", r.Median.SRTPFloor)
	row("median", r.Median.Server)
	tw.Flush()
	lossLines := 0
	for i, run := range r.Runs {
		for _, p := range []*PhaseResult{run.Floor, run.SRTPFloor, run.Server} {
			if p == nil || (p.Loss == 0 && p.SeqLoss == 0 && p.SeqJumps == 0 && p.ServerSocketDrops == 0 && p.ClientSocketDrops == 0 && p.NotStarted == 0) {
				continue
			}
			if lossLines++; lossLines == 1 {
				fmt.Fprintln(w)
			}
			if p.NotStarted > 0 {
				fmt.Fprintf(w, "run %d %s: %d subscriber streams had no media by the join timeout\n", i+1, p.Name, p.NotStarted)
			}
			fmt.Fprintf(w, "run %d %s: loss %s (RTP sequence gaps %s, %d jumps of more than 1000; %d streams stalled); kernel drops at the forwarder's socket %d, at the clients' sockets %d",
				i+1, p.Name, pct(p.Loss), pct(p.SeqLoss), p.SeqJumps, p.Stalled, p.ServerSocketDrops, p.ClientSocketDrops)
			if len(p.SFUDropped) > 0 {
				fmt.Fprintf(w, "; SFU dropped %v", p.SFUDropped)
			}
			fmt.Fprintln(w)
		}
	}
	heapLines := 0
	for i, run := range r.Runs {
		if p := run.Server; p != nil && p.HeapAlloc > 0 {
			if heapLines++; heapLines == 1 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "run %d %s: Go heap: %.2f allocations, %.0f B allocated per forwarded packet; %.0f GCs in the window; %.1f MB in use at its end\n",
				i+1, p.Name, p.AllocsPerPacket, p.BytesPerPacket, p.GCs, p.HeapAlloc/1e6)
		}
	}
	if r.Median.CPUPerPacketRatio > 0 {
		fmt.Fprintf(w, "\nserver / floor (median of per-run ratios): CPU per forwarded packet %.2fx, latency p50 %.2fx, p99 %.2fx\n",
			r.Median.CPUPerPacketRatio, r.Median.LatencyP50Ratio, r.Median.LatencyP99Ratio)
	}
	if r.Median.SRTPFloorCPURatio > 0 {
		fmt.Fprintf(w, "srtp floor / floor: CPU per forwarded packet %.2fx (the cryptography's share of any SRTP forwarder)\n", r.Median.SRTPFloorCPURatio)
	}
	if r.Median.ServerSRTPRatio > 0 {
		fmt.Fprintf(w, "server / srtp floor: CPU per forwarded packet %.2fx\n", r.Median.ServerSRTPRatio)
	}
	return nil
}

func pct(v float64) string {
	if v == 0 {
		return "0%"
	}
	return fmt.Sprintf("%.3f%%", 100*v)
}

func cpuList(c []int) string {
	if len(c) == 0 {
		return "any"
	}
	s := make([]string, len(c))
	for i, v := range c {
		s[i] = fmt.Sprint(v)
	}
	return strings.Join(s, ",")
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "linux"
	}
	return "Linux " + strings.TrimSpace(string(b))
}
