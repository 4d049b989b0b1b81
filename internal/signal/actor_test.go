package signal

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestUnsupportedVersion(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	for _, tc := range []struct {
		name   string
		protos []string
	}{
		{"no subprotocol", nil},
		{"only a later version", []string{"bedside.v2"}},
		{"another protocol", []string{"chat"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := h.tryDial("clinician", tc.protos)
			if err != nil {
				t.Fatal(err)
			}
			c.expectClosed(websocket.StatusProtocolError, "unsupported_version")
		})
	}
	t.Run("v1 among others", func(t *testing.T) {
		c, err := h.tryDial("clinician", []string{"bedside.v2", Subprotocol})
		if err != nil {
			t.Fatal(err)
		}
		if c.ws.Subprotocol() != Subprotocol {
			t.Fatalf("server chose %q", c.ws.Subprotocol())
		}
		c.hello(h.visit.ID)
	})
}

func TestHelloRequired(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.dial("clinician")
	for _, m := range []string{
		`{"type":"signal","to":"prt_abc","candidate":null}`,
		`{"type":"admit","participant":"prt_abc"}`,
		`{"type":"end"}`,
		`{"type":"leave"}`,
		`{"type":"ping"}`,
	} {
		var in struct{ Type string }
		json.Unmarshal([]byte(m), &in)
		c.send(m)
		c.expectError(CodeHelloRequired, in.Type)
	}
	c.hello(h.visit.ID) // the connection stayed usable
	c.send(`{"type":"end"}`)
	c.expect("ended")
	c.expectClosed(websocket.StatusNormalClosure, "ended")
}

// TestBadMessagesKeepConnection: after each bad message the connection still works: a
// signal to nobody is answered not_found.
func TestBadMessagesKeepConnection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.dial("clinician")
	c.hello(h.visit.ID)
	big := func(n int) []byte {
		head := `{"type":"signal","to":"prt_nobody","description":{"type":"offer","sdp":"`
		return []byte(head + strings.Repeat("a", n-len(head)-3) + `"}}`)
	}
	for _, tc := range []struct {
		name      string
		typ       websocket.MessageType
		data      []byte
		code      string
		inReplyTo string
	}{
		{"malformed JSON", websocket.MessageText, []byte(`{"type":`), CodeBadJSON, ""},
		{"JSON array", websocket.MessageText, []byte(`[]`), CodeBadJSON, ""},
		{"empty", websocket.MessageText, nil, CodeBadJSON, ""},
		{"binary frame", websocket.MessageBinary, []byte(`{"type":"end"}`), CodeBadJSON, ""},
		{"unknown type", websocket.MessageText, []byte(`{"type":"quality"}`), CodeUnknownType, "quality"},
		{"invalid field", websocket.MessageText, []byte(`{"type":"admit","participant":"Ada"}`), CodeInvalid, "admit"},
		{"exactly 64 KiB is read", websocket.MessageText, big(MaxMessage), CodeNotFound, "signal"},
		{"64 KiB + 1", websocket.MessageText, big(MaxMessage + 1), CodeTooLarge, ""},
		{"70 KiB", websocket.MessageText, big(70 << 10), CodeTooLarge, ""},
		{"70 KiB binary", websocket.MessageBinary, big(70 << 10), CodeTooLarge, ""},
		{"exactly 1 MiB", websocket.MessageText, big(HardLimit), CodeTooLarge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.write(tc.typ, tc.data)
			c.expectError(tc.code, tc.inReplyTo)
			c.send(`{"type":"signal","to":"prt_nobody","candidate":null}`)
			c.expectError(CodeNotFound, "signal")
		})
	}
}

func TestOverHardLimitCloses(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	clin, pat, _, patID := h.call()
	head := `{"type":"signal","to":"prt_nobody","description":{"type":"offer","sdp":"`
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	pat.ws.Write(ctx, websocket.MessageText, []byte(head+strings.Repeat("a", HardLimit+1-len(head)-3)+`"}}`)) // may fail half-way: the server closes
	pat.expectClosed(websocket.StatusMessageTooBig, "")
	m := clin.expect("peer")
	if m.str("event") != "gone" || !strings.Contains(m.String(), patID) {
		t.Fatalf("clinician got %s, want peer gone for the patient", m)
	}
}

func TestSecondHello(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.dial("clinician")
	c.hello(h.visit.ID)
	c.send(helloMsg(h.visit.ID, c.session()))
	c.expectError(CodeAlreadyJoined, "hello")
	c.send(helloMsg(h.visit.ID, "s_another-page"))
	c.expectError(CodeAlreadyJoined, "hello")
	c.send(`{"type":"signal","to":"prt_nobody","candidate":null}`)
	c.expectError(CodeNotFound, "signal")
}

// TestHelloRefused: a hello that cannot join gets one error and the connection is closed.
func TestHelloRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ended := h.patient("Grace") // made before the visit below ends
	for _, tc := range []struct {
		name  string
		as    string
		visit string
		code  string
	}{
		{"clinician of another visit", "other", h.visit.ID, CodeForbidden},
		{"staff may not join a call", "staff", h.visit.ID, CodeForbidden},
		{"clinician without visit", "clinician", "", CodeInvalid},
		{"unknown visit", "clinician", "vst_doesnotexist", CodeNotFound},
		{"patient naming another visit", h.patient("Ada"), "vst_doesnotexist", CodeForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(tc.as)
			c.send(helloMsg(tc.visit, c.session()))
			c.expectError(tc.code, "hello")
			c.expectClosed(websocket.StatusPolicyViolation, tc.code)
		})
	}
	t.Run("admin may join and admit", func(t *testing.T) {
		c := h.dial("admin")
		w := c.hello(h.visit.ID)
		if _, ok := w.m["waiting"]; !ok {
			t.Errorf("admin's welcome has no waiting list: %s", w)
		}
		c.send(`{"type":"leave"}`)
		c.expect("bye")
		c.expectClosed(websocket.StatusNormalClosure, "left")
	})
	t.Run("after the visit ended", func(t *testing.T) {
		if _, err := h.vm.End(context.Background(), h.visit.ID); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ as, visit string }{{"clinician", h.visit.ID}, {ended, ""}} {
			c := h.dial(tc.as)
			c.send(helloMsg(tc.visit, c.session()))
			c.expectError(CodeVisitEnded, "hello")
			c.expectClosed(websocket.StatusPolicyViolation, CodeVisitEnded)
		}
	})
}

// TestWaitingPatient: nothing a waiting patient sends reaches anyone, and no SDP reaches it.
func TestWaitingPatient(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	clin := h.dial("clinician")
	clinID := participantID(clin.hello(h.visit.ID))
	patID := h.patient("Ada")
	pat := h.dial(patID)
	w := pat.hello(h.visit.ID)
	if w.m["admitted"] != false {
		t.Fatalf("welcome %s: want admitted false", w)
	}
	if _, ok := w.m["waiting"]; ok {
		t.Errorf("a patient's welcome shows the waiting list: %s", w)
	}
	clin.expect("waiting")

	pat.send(fmt.Sprintf(`{"type":"signal","to":%q,"description":{"type":"offer","sdp":"v=0\r\n"}}`, clinID))
	pat.expectError(CodeNotAdmitted, "signal")
	pat.send(fmt.Sprintf(`{"type":"signal","to":%q,"candidate":null}`, clinID))
	pat.expectError(CodeNotAdmitted, "signal")
	pat.send(fmt.Sprintf(`{"type":"admit","participant":%q}`, patID))
	pat.expectError(CodeForbidden, "admit")
	pat.send(`{"type":"end"}`)
	pat.expectError(CodeForbidden, "end")

	clin.send(fmt.Sprintf(`{"type":"signal","to":%q,"description":{"type":"offer","sdp":"v=0\r\n"}}`, patID))
	clin.expectError(CodeNotFound, "signal")
	clin.quiet(200 * time.Millisecond)
	pat.quiet(0)

	// The visit goes on: the clinician can still admit.
	clin.send(fmt.Sprintf(`{"type":"admit","participant":%q}`, patID))
	pat.expect("admitted")
}

func TestAdmitAndRelay(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	clin, pat, clinID, patID := h.call()

	offer := fmt.Sprintf(`{"type":"signal","to":%q,"description":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}}`, patID)
	clin.send(offer)
	if got, want := pat.expect("signal").String(), fmt.Sprintf(`{"type":"signal","from":%q,"description":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}}`, clinID); got != want {
		t.Errorf("patient got\n %s\nwant\n %s", got, want)
	}
	for _, tc := range []struct{ in, out string }{
		{`"description":{"type":"answer","sdp":"v=0\r\n"}`, `"description":{"type":"answer","sdp":"v=0\r\n"}`},
		{`"candidate":{"sdpMid":"0","candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host","sdpMLineIndex":0}`, `"candidate":{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}`},
		{`"candidate":null`, `"candidate":null`},
	} {
		pat.send(fmt.Sprintf(`{"type":"signal","to":%q,%s}`, clinID, tc.in))
		if got, want := clin.expect("signal").String(), fmt.Sprintf(`{"type":"signal","from":%q,%s}`, patID, tc.out); got != want {
			t.Errorf("clinician got\n %s\nwant\n %s", got, want)
		}
	}

	clin.send(fmt.Sprintf(`{"type":"signal","to":%q,"candidate":null}`, clinID))
	clin.expectError(CodeNotFound, "signal") // not to oneself
	clin.send(fmt.Sprintf(`{"type":"admit","participant":%q}`, patID))
	clin.expectError(CodeWrongState, "admit")
	clin.send(`{"type":"admit","participant":"prt_nobody"}`)
	clin.expectError(CodeNotFound, "admit")
	pat.quiet(100 * time.Millisecond)
}

func TestLeave(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	clin, pat, _, patID := h.call()
	pat.send(`{"type":"leave"}`)
	if m := pat.expect("bye"); m.str("reason") != "left" {
		t.Errorf("got %s, want bye left", m)
	}
	pat.expectClosed(websocket.StatusNormalClosure, "left")
	if m := clin.expect("peer"); m.str("event") != "left" || !strings.Contains(m.String(), patID) {
		t.Errorf("clinician got %s, want peer left", m)
	}
}

func TestEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	clin, pat, _, _ := h.call()
	waiting := h.dial(h.patient("Grace"))
	waiting.hello("")
	clin.expect("waiting")
	clin.send(`{"type":"end"}`)
	for _, c := range []*conn{clin, pat, waiting} {
		if m := c.expect("ended"); m.str("reason") != "ended" {
			t.Errorf("%s got %s, want ended", c.name, m)
		}
		c.expectClosed(websocket.StatusNormalClosure, "ended")
	}
}

// TestRateLimit: a flood gets rate_limited errors, every message is answered, and the
// connection stays open.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.dial("clinician")
	c.hello(h.visit.ID)
	const n = 400
	for range n {
		c.send(`{"type":"signal","to":"prt_nobody","candidate":null}`)
	}
	codes := map[string]int{}
	for range n {
		codes[c.expect("error").str("code")]++
	}
	if codes[CodeRateLimited] < n/4 || codes[CodeNotFound] < rateBurst/2 || codes[CodeRateLimited]+codes[CodeNotFound] != n {
		t.Errorf("answers to %d messages: %v; want about %d not_found and the rest rate_limited", n, codes, rateBurst)
	}
	time.Sleep(100 * time.Millisecond) // a few tokens come back
	c.send(`{"type":"signal","to":"prt_nobody","candidate":null}`)
	c.expectError(CodeNotFound, "signal")
}

// TestLiveness: a client that stops answering pings is closed, and the others are told
// at once; a client that reads is kept. Not parallel: its timing is tight.
func TestLiveness(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.PingEvery, c.PongWait = 50*time.Millisecond, 100*time.Millisecond })
	clin, pat, _, patID := h.call()
	clin.quiet(500 * time.Millisecond) // ten pings answered: both stay

	pat.stopAfterNext()
	clin.send(fmt.Sprintf(`{"type":"signal","to":%q,"candidate":null}`, patID))
	pat.expect("signal")
	start := time.Now()
	m := clin.expect("peer")
	if m.str("event") != "gone" || !strings.Contains(m.String(), patID) {
		t.Fatalf("clinician got %s, want peer gone", m)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("peer gone after %v, want within 1 s", d)
	}
	clin.quiet(300 * time.Millisecond)
	clin.send(fmt.Sprintf(`{"type":"signal","to":%q,"candidate":null}`, patID))
	clin.expectError(CodeNotFound, "signal")
	eventually(t, "the clinician is the only client", func() bool { return h.srv.Clients() == 1 })
}

// TestPing: anyone who has said hello, admitted or waiting, gets a pong for each ping, and
// nobody else hears of it.
func TestPing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	clin := h.dial("clinician")
	clin.hello(h.visit.ID)
	pat := h.dial(h.patient("Ada"))
	pat.hello(h.visit.ID)
	clin.expect("waiting")
	for _, c := range []*conn{clin, pat, clin} {
		c.send(`{"type":"ping"}`)
		if m := c.expect("pong"); len(m.m) != 1 {
			t.Errorf("pong %s: want the type alone", m)
		}
	}
	clin.quiet(200 * time.Millisecond)
	pat.quiet(0)
	pat.send(`{"type":"ping","extra":1}`)
	pat.expectError(CodeInvalid, "ping")
}

// TestSlowClient: a client that does not read while messages pile up for it is closed;
// the sender is not held up.
func TestSlowClient(t *testing.T) {
	t.Parallel()
	const writeWait = 2 * time.Second // longer than sending the 190 offers takes under -race
	h := newHarness(t, func(c *Config) { c.WriteWait = writeWait })
	clin, pat, _, patID := h.call()
	pat.stopAfterNext()
	clin.send(fmt.Sprintf(`{"type":"signal","to":%q,"candidate":null}`, patID))
	pat.expect("signal")

	// 190 offers of 60 KB: more than the socket buffers and the outbox hold.
	sdp := strings.Repeat("a", 60<<10)
	start := time.Now()
	for range rateBurst - 10 {
		clin.send(fmt.Sprintf(`{"type":"signal","to":%q,"description":{"type":"offer","sdp":%q}}`, patID, sdp))
	}
	// The sender is not held up: every relay went through without error and its next
	// request is answered, while the slow patient is dropped after writeWait (peer gone).
	// The two can come in either order: on a loaded machine sending the offers may take
	// longer than writeWait.
	clin.send(`{"type":"signal","to":"prt_nobody","candidate":null}`)
	var answered, dropped bool
	for !answered || !dropped {
		m := clin.nextWithin(3 * writeWait)
		switch {
		case m.typ() == "error" && m.str("code") == CodeNotFound:
			answered = true
			t.Logf("sender answered after %v", time.Since(start))
		case m.typ() == "peer" && m.str("event") == "gone" && strings.Contains(m.String(), patID):
			dropped = true
		default:
			t.Fatalf("clinician got %s, want its not_found answer and peer gone for the slow patient", m)
		}
	}
	t.Logf("slow client dropped after %v", time.Since(start))
	eventually(t, "the clinician is the only client", func() bool { return h.srv.Clients() == 1 })
}

func TestShutdown(t *testing.T) {
	before := goleak.IgnoreCurrent()
	h := newHarness(t, nil)
	clin, pat, _, _ := h.call()
	waiting := h.dial(h.patient("Grace"))
	waiting.hello("")
	clin.expect("waiting")
	silent := h.dial("admin") // connected, no hello yet

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Shutdown returned: every actor has ended.
	if n := h.srv.Clients(); n != 0 {
		t.Errorf("%d clients after Shutdown", n)
	}
	if rooms, members := h.vm.LiveCounts(); rooms != 0 || members != 0 {
		t.Errorf("%d rooms, %d members after Shutdown", rooms, members)
	}
	// The actors have ended; Serve itself signals the wait group in its last deferred
	// call, so its frame may be seen for a moment while it returns.
	buf := make([]byte, 1<<20)
	for _, fn := range []string{"signal.(*client).run", "signal.(*client).readLoop", "signal.(*client).pingLoop", "signal.(*Server).Serve"} {
		eventually(t, fn+" gone after Shutdown", func() bool {
			return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn)
		})
	}

	for _, c := range []*conn{clin, pat, waiting, silent} {
		for {
			m := c.next()
			if m.typ() == "bye" {
				if m.str("reason") != "server_shutdown" {
					t.Errorf("%s got %s", c.name, m)
				}
				break
			}
			if m.typ() != "peer" && m.typ() != "waiting" { // news of someone whose bye came first
				t.Fatalf("%s got %s before bye", c.name, m)
			}
		}
		c.expectClosed(websocket.StatusGoingAway, "server_shutdown")
	}

	if _, err := h.tryDial("clinician", []string{Subprotocol}); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("dial after Shutdown: %v, want status 503", err)
	}
	h.close()
	goleak.VerifyNone(t, before)
}

// TestShutdownWhileConnecting: connections racing with Shutdown do not keep it waiting.
func TestShutdownWhileConnecting(t *testing.T) {
	t.Parallel()
	for i := range 10 {
		h := newHarness(t, nil)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 8 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					// Stay connected (until the test's cleanup): a connection that Shutdown
					// does not say goodbye to would keep it waiting.
					h.tryDial("clinician", []string{Subprotocol}) // 503 once closing
				}
			})
		}
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := h.srv.Shutdown(ctx)
		cancel()
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: Shutdown: %v (a connection accepted during Shutdown was never told)", i, err)
		}
		h.close()
	}
}
