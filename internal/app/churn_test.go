package app_test

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/client"
)

// churnCycles is how many times the guest joins and leaves. Under the race detector (the
// unit run of make test) the test makes fewer, which is enough for the detector; make test
// runs it once more without it, with all 200 (Makefile, unit). BEDSIDE_CHURN sets another
// number; BEDSIDE_CHURN_TRACE logs the heap every 20 cycles; BEDSIDE_CHURN_PROFILE=dir
// writes heap profiles before and after (go tool pprof -base before after).
// warmup cycles come before the goroutines and the heap are measured.
const warmup = 15

func churnCycles() int {
	if n := os.Getenv("BEDSIDE_CHURN"); n != "" {
		c, _ := strconv.Atoi(n)
		return c
	}
	if raceEnabled {
		return 30
	}
	return 200
}

// TestSFUChurn: in an SFU visit with two people publishing, a guest joins (publishing and
// receiving through the SFU both ways) and leaves, again and again. Afterwards the
// goroutines and the heap are back where they were after the first cycle, and the SFU
// holds exactly the two who stayed.
func TestSFUChurn(t *testing.T) {
	checkLeaks(t)
	if os.Getenv("BEDSIDE_CHURN_PROFILE") != "" {
		runtime.MemProfileRate = 512
	}
	cycles := churnCycles()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cycles)*time.Second+60*time.Second)
	defer cancel()
	srv := apptest.Start(t, apptest.Options{})
	p := newParty(t, ctx, srv, "sfu")
	p.join("patient", "", true)
	g, err := p.vs.clinician.Invite(ctx, p.vs.visit.ID, "participant")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := client.LinkToken(g.GuestURL)
	guest := client.New(srv.URL())
	guestID, err := guest.JoinLink(ctx, tok, "Carl")
	if err != nil {
		t.Fatal(err)
	}
	clinician := p.calls["clinician"]

	cycle := func(n int) {
		t.Helper()
		conn, err := guest.Dial(ctx, true)
		if err != nil {
			t.Fatalf("cycle %d: %v", n, err)
		}
		call, err := client.Join(ctx, conn, "", os.Getenv("BEDSIDE_CHURN_MEDIA") != "0")
		if err != nil {
			t.Fatalf("cycle %d: %v", n, err)
		}
		if n == 0 {
			// The first time the guest waits; the clinician admits it, for good.
			if err := clinician.Conn.Send(ctx, map[string]string{"type": "admit", "participant": guestID}); err != nil {
				t.Fatal(err)
			}
		}
		cctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- call.Run(cctx) }()
		// Media both ways through the SFU: the guest receives the clinician, the clinician
		// (through its SFU connections of this session) receives the guest.
		deadline := time.Now().Add(20 * time.Second)
		for {
			s := call.SFU()
			var in, out int64
			if s != nil {
				_, in = s.From(p.ids["clinician"]).Packets()
			}
			if cs := clinician.SFU(); cs != nil {
				_, out = cs.From(guestID).Packets()
			}
			if in > 0 && (out > 0 || os.Getenv("BEDSIDE_CHURN_MEDIA") == "0") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: no media through the SFU (guest receives %d, clinician %d video packets; mode %s)", n, in, out, call.Mode())
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := conn.Send(ctx, map[string]string{"type": "leave"}); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("cycle %d: %v", n, err)
		}
		stop()
		conn.Close()
		// The SFU lets the guest go: back to the two who stay.
		for {
			if _, n := srv.SFU().Counts(); n == 2 {
				break
			}
			if time.Now().After(deadline) {
				_, np := srv.SFU().Counts()
				t.Fatalf("cycle %d: %d in the SFU after the guest left", n, np)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Warm up: the first cycle admits the guest; the next ones let the long-lived
	// connections' retransmission buffers and pools fill to their steady size.
	for n := range warmup {
		cycle(n)
	}
	settle := func() (goroutines int, heap uint64) {
		// Goroutines of the last cycle's connections end within moments of their close.
		var ms runtime.MemStats
		for range 50 {
			runtime.GC()
			time.Sleep(20 * time.Millisecond)
		}
		runtime.ReadMemStats(&ms)
		return runtime.NumGoroutine(), ms.HeapAlloc
	}
	g0, h0 := settle()
	profile := func(name string) {
		if dir := os.Getenv("BEDSIDE_CHURN_PROFILE"); dir != "" {
			f, _ := os.Create(dir + "/" + name)
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	profile("before.pb.gz")
	start := time.Now()
	for n := warmup; n < warmup+cycles; n++ {
		cycle(n)
		if os.Getenv("BEDSIDE_CHURN_TRACE") != "" && n%20 == 0 {
			g, h := settle()
			t.Logf("after %d cycles: %d goroutines, heap %.1f MB", n, g, float64(h)/1e6)
		}
	}
	elapsed := time.Since(start)
	// Wait for the goroutines to come back down (pion closes some asynchronously).
	var g1 int
	var h1 uint64
	for range 20 {
		if g1, h1 = settle(); g1 <= g0+2 {
			break
		}
	}
	profile("after.pb.gz")
	t.Logf("%d join/leave cycles in %v (%v each): goroutines %d -> %d, heap %.1f -> %.1f MB; the clinician's sub connection has %d transceivers",
		cycles, elapsed.Round(time.Millisecond), (elapsed / time.Duration(cycles)).Round(time.Millisecond), g0, g1, float64(h0)/1e6, float64(h1)/1e6,
		clinician.SFU().Transceivers())
	if g1 > g0+2 {
		t.Errorf("goroutines grew from %d to %d over %d cycles:\n%s", g0, g1, cycles, goroutineStacks())
	}
	// The heap may differ by what pools and caches hold at the moment (a quarter, and
	// 2 MB); a leak of a cycle's connections (hundreds of kB each) would be far above it.
	if h1 > h0+h0/4+2<<20 {
		t.Errorf("heap grew from %.1f MB to %.1f MB over %d cycles", float64(h0)/1e6, float64(h1)/1e6, cycles)
	}
}
