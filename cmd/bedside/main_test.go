package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/pquerna/otp/totp"

	"github.com/bedside/bedside/internal/client"
)

// The test binary doubles as the bedside binary: run with GO_TEST_RUN_BEDSIDE_MAIN=1 it is
// main(), so the tests below exercise the real process, signals and all.
func TestMain(m *testing.M) {
	if os.Getenv("GO_TEST_RUN_BEDSIDE_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// syncBuffer collects a child's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// bedside runs the binary to completion.
func bedside(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "GO_TEST_RUN_BEDSIDE_MAIN=1")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bedside %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestServeSIGTERMAndLogHygiene runs the real server process, holds a visit through it
// with two clients exchanging SDP and candidates, then sends SIGTERM: the clients are told
// the server is going away (1001), the process exits 0, and nothing in its logs, even at
// debug level, holds a token, a cookie, SDP, a candidate, a password or the patient's name.
func TestServeSIGTERMAndLogHygiene(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	addr := freePort(t)
	base := "http://" + addr
	const password = "a-long-password-123"
	const patientName = "Zelda Quintessa"
	bedside(t, password+"\n", "user", "add", "--data-dir", dir, "--email", "rivera@clinic.example", "--name", "Dr Rivera", "--role", "clinician")

	var logs syncBuffer
	srv := exec.Command(os.Args[0], "serve", "--data-dir", dir, "--http-addr", addr, "--stun-addr", "127.0.0.1:0", "--log-level", "debug")
	srv.Env = append(os.Environ(), "GO_TEST_RUN_BEDSIDE_MAIN=1")
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		srv.Process.Kill()
		<-exited
	}()
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("server did not become ready: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The default configuration requires a second factor of clinicians: the password alone
	// opens nothing but the enrollment of one.
	doc := client.New(base)
	var step *client.SecondStepError
	if err := doc.SignIn(ctx, "rivera@clinic.example", password); !errors.As(err, &step) || step.Stage != "enroll" {
		t.Fatalf("sign-in with the default configuration: %v, want the enrollment step", err)
	}
	if _, err := doc.CreateVisit(ctx, patientName); err == nil {
		t.Fatal("a clinician without a second factor created a visit")
	}
	setup, err := doc.BeginTOTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	code, err := totp.GenerateCode(setup.Secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	recovery, err := doc.ConfirmTOTP(ctx, code)
	if err != nil || len(recovery) != 10 {
		t.Fatalf("confirm TOTP: %v, %d recovery codes", err, len(recovery))
	}
	v, err := doc.CreateVisit(ctx, patientName)
	if err != nil {
		t.Fatal(err)
	}
	token, _ := client.LinkToken(v.PatientURL)
	dconn, err := doc.Dial(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	dcall, err := client.Join(ctx, dconn, v.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	pat := client.New(base)
	pid, err := pat.JoinLink(ctx, token, patientName)
	if err != nil {
		t.Fatal(err)
	}
	pconn, err := pat.Dial(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	pcall, err := client.Join(ctx, pconn, "", true)
	if err != nil {
		t.Fatal(err)
	}
	runs := make(chan error, 2)
	go func() { runs <- dcall.Run(ctx) }()
	go func() { runs <- pcall.Run(ctx) }()
	dconn.Send(ctx, map[string]string{"type": "admit", "participant": pid})
	var peer *client.Peer
	for peer == nil && ctx.Err() == nil {
		peer = dcall.Peer(pid)
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-peer.FirstPacket():
	case <-ctx.Done():
		t.Fatalf("no media through the real process; server log:\n%s", logs.String())
	}

	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i, call := range []*client.Call{dcall, pcall} {
		var bye struct{ Reason string }
		var seen []string
	wait:
		for {
			select {
			case m := <-call.Events:
				seen = append(seen, m.Type)
				if m.Type == "bye" {
					json.Unmarshal(m.Raw, &bye)
					break wait
				}
			case <-ctx.Done():
				var errs []error
				for len(errs) < 2 {
					select {
					case err := <-runs:
						errs = append(errs, err)
						continue
					case <-time.After(time.Second):
					}
					break
				}
				t.Fatalf("call %d: no bye after SIGTERM; messages: %v; calls ended with %v", i, seen, errs)
			}
		}
		if bye.Reason != "server_shutdown" {
			t.Fatalf("call %d: bye %+v, want server_shutdown", i, bye)
		}
	}
	for i := 0; i < 2; i++ {
		<-runs
	}
	if got := dconn.CloseStatus(); got != websocket.StatusGoingAway {
		t.Errorf("close status %v, want 1001 going away", got)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("server exited with %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
	exited <- nil // for the deferred cleanup

	out := logs.String()
	if !strings.Contains(out, "shutting down") || !strings.Contains(out, "bedside stopped") {
		t.Errorf("logs lack the shutdown: %s", out)
	}
	secrets := map[string]string{"link token": token, "password": password, "patient name": patientName, "patient first name": "Zelda",
		"TOTP secret": setup.Secret, "recovery code": recovery[0]}
	for _, c := range doc.HTTP.Jar.Cookies(mustParse(base)) {
		secrets["cookie "+c.Name] = c.Value
	}
	for _, c := range pat.HTTP.Jar.Cookies(mustParse(base)) {
		secrets["cookie "+c.Name] = c.Value
	}
	for what, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the logs contain the %s", what)
		}
	}
	for _, marker := range []string{"v=0", "a=ice-ufrag", "a=fingerprint", "candidate:", "sdp"} {
		if strings.Contains(strings.ToLower(out), strings.ToLower(marker)) {
			t.Errorf("the logs contain %q (SDP or candidates)", marker)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			t.Errorf("log line is not structured JSON: %q", line)
		}
	}
	dconn.Close()
	pconn.Close()
}

func mustParse(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
