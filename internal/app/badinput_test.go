package app_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bedside/bedside/internal/app"
	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/client"
)

// runningVisit is visit A: clinician and patient admitted, media flowing.
type runningVisit struct {
	doc, pat *client.Call
	docPeer  *client.Peer
	patPeer  *client.Peer
	done     chan error
}

func startRunningVisit(t *testing.T, ctx context.Context, srv *apptest.Server) *runningVisit {
	t.Helper()
	vs := newVisit(t, srv, "a@clinic.example")
	doc := joinClinician(t, ctx, vs.clinician, vs.visit.ID, true)
	_, pat := joinPatient(t, ctx, srv.URL(), vs.token, "Ada", true)
	rv := &runningVisit{doc: doc, pat: pat, done: make(chan error, 2)}
	go func() { rv.done <- doc.Run(ctx) }()
	go func() { rv.done <- pat.Run(ctx) }()
	m := nextEvent(t, ctx, doc, "waiting")
	var w struct{ Waiting []client.Waiting }
	m.Decode(&w)
	doc.Conn.Send(ctx, map[string]string{"type": "admit", "participant": w.Waiting[0].ID})
	for rv.docPeer == nil || rv.patPeer == nil {
		if ctx.Err() != nil {
			t.Fatal("visit A did not connect")
		}
		rv.docPeer, rv.patPeer = doc.Peer(w.Waiting[0].ID), pat.Peer(doc.Welcome.Participant.ID)
		time.Sleep(10 * time.Millisecond)
	}
	for _, p := range []*client.Peer{rv.docPeer, rv.patPeer} {
		select {
		case <-p.FirstPacket():
		case <-ctx.Done():
			t.Fatal("visit A: no media")
		}
	}
	return rv
}

// stillFlowing checks that media keeps arriving on both sides of visit A and that neither
// call ended.
func (rv *runningVisit) stillFlowing(t *testing.T) {
	t.Helper()
	da0, dv0 := rv.docPeer.Packets()
	pa0, pv0 := rv.patPeer.Packets()
	deadline := time.Now().Add(5 * time.Second)
	for {
		da, dv := rv.docPeer.Packets()
		pa, pv := rv.patPeer.Packets()
		if da > da0+10 && dv > dv0+5 && pa > pa0+10 && pv > pv0+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("visit A stalled: clinician audio %d->%d video %d->%d, patient audio %d->%d video %d->%d", da0, da, dv0, dv, pa0, pa, pv0, pv)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-rv.done:
		t.Fatalf("visit A's call ended: %v", err)
	default:
	}
	for _, call := range []*client.Call{rv.doc, rv.pat} {
		for len(call.Events) > 0 {
			if m := <-call.Events; m.Type == "ended" || m.Type == "bye" || m.Type == "error" || (m.Type == "peer" && !strings.Contains(string(m.Raw), `"joined"`)) {
				t.Fatalf("visit A got %s", m.Raw)
			}
		}
	}
}

func expectAPIError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Fatalf("got %v, want %d %s", err, status, code)
	}
	if ae.Message == "" || strings.Contains(ae.Message, "sql") || strings.Contains(ae.Message, ".go") {
		t.Fatalf("error message %q is not for people", ae.Message)
	}
}

func expectProtoError(t *testing.T, ctx context.Context, c *client.Conn, code string) {
	t.Helper()
	m, err := c.Next(ctx, "error")
	if err != nil {
		t.Fatalf("waiting for error %s: %v", code, err)
	}
	var e struct{ Code, Message string }
	m.Decode(&e)
	if e.Code != code || e.Message == "" {
		t.Fatalf("got error %s, want %s", m.Raw, code)
	}
}

// TestBadInputLeavesOtherVisitRunning throws every kind of bad input at the server while
// visit A is in a call: each gets its clear error, and visit A never notices.
func TestBadInputLeavesOtherVisitRunning(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := apptest.Start(t, apptest.Options{})
	rv := startRunningVisit(t, ctx, srv)

	// Visit B, with its own clinician and a patient in the waiting room.
	vb := newVisit(t, srv, "b@clinic.example")
	docB := joinClinician(t, ctx, vb.clinician, vb.visit.ID, false)
	_, patB := joinPatient(t, ctx, srv.URL(), vb.token, "Bob", false)
	m, err := docB.Conn.Next(ctx, "waiting")
	if err != nil {
		t.Fatal(err)
	}
	var w struct{ Waiting []client.Waiting }
	m.Decode(&w)
	patBID := w.Waiting[0].ID

	t.Run("wrong password", func(t *testing.T) {
		c := client.New(srv.URL())
		expectAPIError(t, c.SignIn(ctx, "b@clinic.example", "not the password"), 401, "bad_credentials")
		expectAPIError(t, c.SignIn(ctx, "nobody@clinic.example", "not the password"), 401, "bad_credentials")
	})
	t.Run("links", func(t *testing.T) {
		c := client.New(srv.URL())
		_, err := c.JoinLink(ctx, auth.NewToken(), "Eve")
		expectAPIError(t, err, 404, "link_unknown")
		_, err = c.JoinLink(ctx, "short", "Eve")
		expectAPIError(t, err, 404, "link_unknown")

		revoked := newVisit(t, srv, "r@clinic.example")
		if err := revoked.clinician.Do(ctx, "POST", "/api/v1/visits/"+revoked.visit.ID+"/revoke", nil, nil); err != nil {
			t.Fatal(err)
		}
		_, err = c.JoinLink(ctx, revoked.token, "Eve")
		expectAPIError(t, err, 410, "link_revoked")

		expired := newVisit(t, srv, "e@clinic.example")
		if err := srv.Store().SetVisitLink(ctx, expired.visit.ID, auth.HashToken(expired.token), time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		_, err = c.JoinLink(ctx, expired.token, "Eve")
		expectAPIError(t, err, 410, "link_expired")
	})
	t.Run("malformed and oversized messages", func(t *testing.T) {
		for _, tc := range []struct {
			name, msg, code string
		}{
			{"not json", `{"type":`, "bad_json"},
			{"array", `[1,2]`, "bad_json"},
			{"no type", `{"visit":"x"}`, "unknown_type"},
			{"unknown type", `{"type":"teleport"}`, "unknown_type"},
			{"bad field", `{"type":"admit","participant":42}`, "invalid"},
			{"too large", `{"type":"leave","pad":"` + strings.Repeat("x", 70<<10) + `"}`, "too_large"},
		} {
			if err := patB.Conn.SendRaw(ctx, []byte(tc.msg)); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			expectProtoError(t, ctx, patB.Conn, tc.code)
		}
	})
	t.Run("SDP from a patient not yet admitted", func(t *testing.T) {
		err := patB.Conn.Send(ctx, map[string]any{"type": "signal", "to": docB.Welcome.Participant.ID,
			"description": map[string]string{"type": "offer", "sdp": "v=0\r\n"}})
		if err != nil {
			t.Fatal(err)
		}
		expectProtoError(t, ctx, patB.Conn, "not_admitted")
		// A patient may not admit itself either.
		patB.Conn.Send(ctx, map[string]string{"type": "admit", "participant": patBID})
		expectProtoError(t, ctx, patB.Conn, "forbidden")
		// The clinician of B got nothing from it.
		select {
		case m := <-docB.Conn.In:
			t.Fatalf("clinician B received %s", m.Raw)
		case <-time.After(200 * time.Millisecond):
		}
	})
	t.Run("the connection is still usable", func(t *testing.T) {
		// After all that, the patient's connection still works: the clinician admits it
		// and it is told so.
		docB.Conn.Send(ctx, map[string]string{"type": "admit", "participant": patBID})
		if _, err := patB.Conn.Next(ctx, "admitted"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("message over 1 MiB closes only that connection", func(t *testing.T) {
		// The server closes while the client is still writing, so the write may fail.
		patB.Conn.SendRaw(ctx, []byte(`{"type":"leave","pad":"`+strings.Repeat("x", 2<<20)+`"}`))
		for range patB.Conn.In {
		}
		if got := patB.Conn.CloseStatus(); got != websocket.StatusMessageTooBig {
			t.Fatalf("close status %v, want 1009", got)
		}
	})
	t.Run("no subprotocol", func(t *testing.T) {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL(), "http")+"/api/v1/ws", &websocket.DialOptions{
			HTTPClient: vb.clinician.HTTP, HTTPHeader: map[string][]string{"Origin": {srv.URL()}},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = c.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusProtocolError {
			t.Fatalf("got %v, want close 1002", err)
		}
	})
	t.Run("foreign origin", func(t *testing.T) {
		_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL(), "http")+"/api/v1/ws", &websocket.DialOptions{
			HTTPClient: vb.clinician.HTTP, HTTPHeader: map[string][]string{"Origin": {"https://evil.example"}},
			Subprotocols: []string{"bedside.v1"},
		})
		if err == nil || resp == nil || resp.StatusCode != 403 {
			t.Fatalf("foreign origin: %v", err)
		}
	})

	rv.stillFlowing(t)
	docB.Conn.Close()
	rv.doc.Conn.Close()
	rv.pat.Conn.Close()
	<-rv.done
	<-rv.done
}

// TestVanishedBrowserShownGone: a patient whose network dies without closing anything is
// reported gone to the clinician by the heartbeat.
func TestVanishedBrowserShownGone(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := apptest.Start(t, apptest.Options{App: app.Options{PingEvery: 100 * time.Millisecond, PongWait: 300 * time.Millisecond}})
	vs := newVisit(t, srv, "rivera@clinic.example")
	doc := joinClinician(t, ctx, vs.clinician, vs.visit.ID, false)

	// The patient reaches the server through a proxy the test can freeze.
	px := newFreezeProxy(t, srv.Addr().String())
	pHTTP := client.New(srv.URL())
	if _, err := pHTTP.JoinLink(ctx, vs.token, "Ada"); err != nil {
		t.Fatal(err)
	}
	viaProxy := client.New("http://" + px.addr())
	viaProxy.HTTP.Jar = pHTTP.HTTP.Jar
	// Cookies are per host: copy them to the proxy's address.
	viaProxy.HTTP.Jar.SetCookies(mustURL(t, viaProxy.Base), pHTTP.HTTP.Jar.Cookies(mustURL(t, srv.URL())))
	conn, err := viaProxy.Dial(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	pat, err := client.Join(ctx, conn, "", false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := doc.Conn.Next(ctx, "waiting")
	if err != nil {
		t.Fatal(err)
	}
	var w struct{ Waiting []client.Waiting }
	m.Decode(&w)
	doc.Conn.Send(ctx, map[string]string{"type": "admit", "participant": w.Waiting[0].ID})
	if _, err := pat.Conn.Next(ctx, "admitted"); err != nil {
		t.Fatal(err)
	}
	if e := nextPeerEvent(t, ctx, doc.Conn); e.Event != "joined" {
		t.Fatalf("got peer %s", e.Event)
	}

	px.freeze()
	frozeAt := time.Now()
	e := nextPeerEvent(t, ctx, doc.Conn)
	if e.Event != "gone" || e.Peer.ID != w.Waiting[0].ID {
		t.Fatalf("got peer %+v", e)
	}
	t.Logf("gone reported %v after the network froze (ping 100ms, pong wait 300ms)", time.Since(frozeAt))
	px.close()
	pat.Conn.Close()
	doc.Conn.Close()
}

// freezeProxy forwards TCP connections to a target until frozen: then it stops moving
// bytes without closing anything, as a dead network does.
type freezeProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen chan struct{}
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target, frozen: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *freezeProxy) addr() string { return p.ln.Addr().String() }

func (p *freezeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *freezeProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			io.Copy(io.Discard, src) // swallow everything until closed
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *freezeProxy) freeze() { close(p.frozen) }

func (p *freezeProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
