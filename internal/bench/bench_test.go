package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/bench"
	"github.com/bedside/bedside/internal/store"
)

// TestBenchSmall runs a tiny scenario for a second against an in-process server, the floor
// relay (bare and with SRTP) in-process too, and checks that the report is sane: packets forwarded, latencies
// measured, loss within bounds. It asserts no timing: that is the bench's job.
func TestBenchSmall(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(opt); err != nil {
			t.Error(err)
		}
	})
	srv := apptest.Start(t, apptest.Options{})
	const email, pw = "bench@clinic.example", "correct horse battery"
	srv.AddUser(t, email, "Dr Bench", store.RoleClinician, pw)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := bench.DefaultConfig()
	cfg.Scenario, cfg.Subscribers = bench.ScenarioFanout, 2
	cfg.Policy = "sfu"
	cfg.Duration, cfg.Warmup, cfg.Repeat = time.Second, 200*time.Millisecond, 1
	cfg.Server, cfg.Email, cfg.Password, cfg.ServerPID = srv.URL(), email, pw, os.Getpid()
	cfg.RelayInProcess, cfg.SRTPFloor = true, true
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 1 || rep.Runs[0].Floor == nil || rep.Runs[0].SRTPFloor == nil || rep.Runs[0].Server == nil {
		t.Fatalf("runs: %+v", rep.Runs)
	}
	// The SRTP floor's packets arrive only if the relay and the members agree on keys
	// both ways: received counts only what decrypted.
	for _, p := range []*bench.PhaseResult{rep.Runs[0].Floor, rep.Runs[0].SRTPFloor, rep.Runs[0].Server} {
		// 2 subscribers of about 110 packets/s for about a second.
		if p.Received < 100 || p.Expected < p.Received {
			t.Errorf("%s: received %d of %d expected", p.Name, p.Received, p.Expected)
		}
		if p.LatencyP50 <= 0 || p.LatencyP99 < p.LatencyP50 || p.LatencyMax < p.LatencyP99 {
			t.Errorf("%s: latency p50 %v p99 %v max %v us", p.Name, p.LatencyP50, p.LatencyP99, p.LatencyMax)
		}
		// Loopback loses nothing unless the machine stalls; the bound is loose for -race.
		if p.Loss < 0 || p.Loss > 0.2 {
			t.Errorf("%s: loss %v", p.Name, p.Loss)
		}
		if p.ServerCPU <= 0 || p.CPUPerPacket <= 0 {
			t.Errorf("%s: CPU %v s, %v us per packet", p.Name, p.ServerCPU, p.CPUPerPacket)
		}
	}
	if r := rep.Runs[0]; r.SRTPFloorCPURatio <= 0 || r.ServerSRTPRatio <= 0 {
		t.Errorf("SRTP floor ratios: %v, %v", r.SRTPFloorCPURatio, r.ServerSRTPRatio)
	}
	if s := rep.Runs[0].Server; s.JoinsMeasured != 2 || s.JoinP50 <= 0 {
		t.Errorf("join times: %d measured, p50 %v ms", s.JoinsMeasured, s.JoinP50)
	}
	var text, js bytes.Buffer
	if err := rep.WriteText(&text); err != nil || !strings.Contains(text.String(), "median") || !strings.Contains(text.String(), "srtp floor") {
		t.Errorf("text report (%v):\n%s", err, text.String())
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back bench.Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Median.Server == nil {
		t.Errorf("JSON report (%v): %s", err, js.String())
	}
	t.Logf("\n%s", text.String())
}
