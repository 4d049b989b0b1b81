package signal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/store/sqlite"
	"github.com/bedside/bedside/internal/visit"
)

// waitFor bounds every wait for something the server should do promptly.
const waitFor = 5 * time.Second

// harness is a signalling server on a real visit service and SQLite store, behind an
// httptest server. Who connects is chosen by ?as=: a user key (clinician, other, admin,
// staff) or a patient's participant id (see patient).
type harness struct {
	t     *testing.T
	st    *sqlite.Store
	vm    *visit.Manager
	srv   *Server
	hs    *httptest.Server
	hc    *http.Client
	visit store.Visit // the clinician's visit
	token string      // its patient link
	users map[string]store.User

	mu     sync.Mutex
	ids    map[string]visit.Identity
	closed bool
}

func newHarness(t *testing.T, tweak func(*Config)) *harness {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, st: st, users: map[string]store.User{}, ids: map[string]visit.Identity{}}
	for _, u := range []struct {
		key, name string
		role      store.Role
	}{
		{"clinician", "Dr Rivera", store.RoleClinician},
		{"other", "Dr Okafor", store.RoleClinician},
		{"admin", "Admin", store.RoleAdmin},
		{"staff", "Front Desk", store.RoleStaff},
	} {
		user := store.User{ID: store.NewID("usr"), Email: u.key + "@clinic.example", Name: u.name, Role: u.role, PasswordHash: "-", CreatedAt: time.Now().UTC()}
		if err := st.CreateUser(ctx, user); err != nil {
			t.Fatal(err)
		}
		h.users[u.key] = user
		h.ids[u.key] = visit.Identity{User: &user}
	}
	h.vm = visit.NewManager(st, visit.Config{LinkTTL: time.Hour})
	if h.visit, h.token, err = h.vm.Create(ctx, visit.NewVisit{ClinicianID: h.users["clinician"].ID, PatientName: "Ada Lovelace"}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Visits: h.vm,
		ICE: func(ICERequest) ICEConfig {
			return ICEConfig{Servers: []ICEServer{{URLs: []string{"stun:127.0.0.1:3478"}}}, Policy: "all"}
		},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	h.srv = NewServer(cfg)
	h.hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		id, ok := h.ids[r.URL.Query().Get("as")]
		h.mu.Unlock()
		if !ok {
			http.Error(w, "unknown identity", http.StatusUnauthorized)
			return
		}
		h.srv.Serve(w, r, id)
	}))
	h.hc = &http.Client{Transport: &http.Transport{}}
	t.Cleanup(h.close)
	return h
}

// close shuts the server down and checks that nothing is left behind. Idempotent.
func (h *harness) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		h.t.Errorf("Shutdown: %v", err)
	}
	if n := h.srv.Clients(); n != 0 {
		h.t.Errorf("%d clients left after Shutdown", n)
	}
	if rooms, members := h.vm.LiveCounts(); rooms != 0 || members != 0 {
		h.t.Errorf("%d rooms, %d members left after Shutdown", rooms, members)
	}
	h.hs.Close()
	h.hc.CloseIdleConnections()
	h.st.Close()
}

// patient makes a new patient through the visit link and returns its ?as= key.
func (h *harness) patient(name string) string {
	h.t.Helper()
	p, _, _, err := h.vm.JoinLink(context.Background(), h.token, name, "")
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.ids[p.ID] = visit.Identity{Participant: &p}
	h.mu.Unlock()
	return p.ID
}

func (h *harness) url(as string) string { return h.hs.URL + "/api/v1/ws?as=" + as }

// dial connects as the given identity, offering bedside.v1, and reads in the background.
func (h *harness) dial(as string) *conn {
	h.t.Helper()
	c, err := h.tryDial(as, []string{Subprotocol})
	if err != nil {
		h.t.Fatalf("dial as %s: %v", as, err)
	}
	return c
}

func (h *harness) tryDial(as string, protos []string) (*conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, h.url(as), &websocket.DialOptions{HTTPClient: h.hc, Subprotocols: protos})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (status %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	ws.SetReadLimit(4 << 20)
	c := &conn{t: h.t, name: as, ws: ws, msgs: make(chan msg, 8192), done: make(chan struct{})}
	go c.readLoop()
	h.t.Cleanup(func() {
		ws.CloseNow()
		<-c.done
	})
	return c, nil
}

// msg is one message the test client received.
type msg struct {
	raw []byte
	m   map[string]any
}

func (m msg) typ() string           { s, _ := m.m["type"].(string); return s }
func (m msg) str(key string) string { s, _ := m.m[key].(string); return s }
func (m msg) String() string        { return string(m.raw) }

// conn is a test client: a goroutine reads every message into msgs (and so answers
// pings) until the connection ends or stopAfterNext is asked for.
type conn struct {
	t      *testing.T
	name   string
	ws     *websocket.Conn
	msgs   chan msg
	done   chan struct{} // closed when the reader ended; err says why
	err    error
	read   atomic.Int64 // messages read from the socket, counted before they are queued
	stopAt atomic.Int64 // stop reading after this many messages; 0: never
}

var errStopped = errors.New("the test stopped reading")

func (c *conn) readLoop() {
	defer close(c.done)
	for {
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		n := c.read.Add(1)
		m := msg{raw: data}
		if typ != websocket.MessageText || json.Unmarshal(data, &m.m) != nil {
			m.m = map[string]any{"type": "<not a JSON object>"}
		}
		c.msgs <- m
		if stop := c.stopAt.Load(); stop != 0 && n >= stop {
			c.err = errStopped
			return
		}
	}
}

// stopAfterNext makes the client stop reading its socket after the next message it reads
// from now on: from then on it answers no pings, like a browser that vanished. The count
// is taken rather than a flag read after queueing, because the reader may still be between
// queueing the message the test just took and reading the flag (CI once stopped on the
// admission the test had already seen, before the message it meant).
func (c *conn) stopAfterNext() { c.stopAt.Store(c.read.Load() + 1) }

func (c *conn) next() msg {
	c.t.Helper()
	return c.nextWithin(waitFor)
}

func (c *conn) nextWithin(d time.Duration) msg {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-c.done:
		select {
		case m := <-c.msgs:
			return m
		default:
		}
		c.t.Fatalf("%s: connection ended (%v) while waiting for a message", c.name, c.err)
	case <-time.After(d):
		c.t.Fatalf("%s: no message within %v", c.name, d)
	}
	panic("unreachable")
}

// expect returns the next message, which must be of type typ. An admission comes with the
// participant's fresh ICE servers just before it (docs/protocol.md), which expect checks.
func (c *conn) expect(typ string) msg {
	c.t.Helper()
	m := c.next()
	if typ == "admitted" {
		if m.typ() != "ice_servers" {
			c.t.Fatalf("%s: got %s, want the ice_servers that precede admitted", c.name, m)
		}
		m = c.next()
	}
	if m.typ() != typ {
		c.t.Fatalf("%s: got %s, want a %q message", c.name, m, typ)
	}
	return m
}

// expectError returns the next message, which must be an error with code (in reply to
// inReplyTo, "" = none).
func (c *conn) expectError(code, inReplyTo string) msg {
	c.t.Helper()
	m := c.expect("error")
	if m.str("code") != code || m.str("in_reply_to") != inReplyTo {
		c.t.Fatalf("%s: got %s, want error %s in reply to %q", c.name, m, code, inReplyTo)
	}
	if m.str("message") == "" {
		c.t.Errorf("%s: error without a message: %s", c.name, m)
	}
	return m
}

// quiet checks that nothing arrives for d.
func (c *conn) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		c.t.Fatalf("%s: unexpected message %s", c.name, m)
	case <-c.done:
		c.t.Fatalf("%s: connection ended (%v)", c.name, c.err)
	case <-time.After(d):
	}
}

// expectClosed waits until the server closes the connection with status and reason
// (reason "" = any), after no further messages.
func (c *conn) expectClosed(status websocket.StatusCode, reason string) {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(waitFor):
		c.t.Fatalf("%s: still open after %v, want closed with %v", c.name, waitFor, status)
	}
	select {
	case m := <-c.msgs:
		c.t.Fatalf("%s: unexpected message %s before the close", c.name, m)
	default:
	}
	var ce websocket.CloseError
	if !errors.As(c.err, &ce) {
		c.t.Fatalf("%s: connection ended with %v, want a close frame %v", c.name, c.err, status)
	}
	if ce.Code != status || reason != "" && ce.Reason != reason {
		c.t.Fatalf("%s: closed with %v %q, want %v %q", c.name, ce.Code, ce.Reason, status, reason)
	}
}

func (c *conn) send(s string) {
	c.t.Helper()
	c.write(websocket.MessageText, []byte(s))
}

func (c *conn) write(typ websocket.MessageType, b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.ws.Write(ctx, typ, b); err != nil {
		c.t.Fatalf("%s: write: %v", c.name, err)
	}
}

// hello joins visitID ("" = none given) and returns the welcome.
func (c *conn) hello(visitID string) msg {
	c.t.Helper()
	c.send(helloMsg(visitID, c.session()))
	return c.expect("welcome")
}

func (c *conn) session() string {
	return "s_" + strings.NewReplacer("_", "-").Replace(c.name) + "-page"
}

func helloMsg(visitID, session string) string {
	if visitID == "" {
		return fmt.Sprintf(`{"type":"hello","session":%q}`, session)
	}
	return fmt.Sprintf(`{"type":"hello","visit":%q,"session":%q}`, visitID, session)
}

// participantID is the welcome's participant.id.
func participantID(welcome msg) string {
	p, _ := welcome.m["participant"].(map[string]any)
	id, _ := p["id"].(string)
	return id
}

// ids lists the "id" of every entry of a list field (peers, waiting).
func ids(m msg, key string) []string {
	list, _ := m.m[key].([]any)
	out := []string{}
	for _, e := range list {
		o, _ := e.(map[string]any)
		id, _ := o["id"].(string)
		out = append(out, id)
	}
	return out
}

// call sets up the usual visit: the clinician connected, a patient connected and admitted,
// every admission message checked.
func (h *harness) call() (clin, pat *conn, clinID, patID string) {
	h.t.Helper()
	clin = h.dial("clinician")
	w := clin.hello(h.visit.ID)
	clinID = participantID(w)
	if got := ids(w, "waiting"); len(got) != 0 {
		h.t.Fatalf("clinician's welcome lists waiting %v", got)
	}
	patID = h.patient("Ada")
	pat = h.dial(patID)
	pw := pat.hello("")
	if pw.m["admitted"] != false || len(ids(pw, "peers")) != 0 {
		h.t.Fatalf("a new patient's welcome: %s", pw)
	}
	if got := ids(clin.expect("waiting"), "waiting"); len(got) != 1 || got[0] != patID {
		h.t.Fatalf("clinician's waiting list %v, want [%s]", got, patID)
	}
	clin.send(fmt.Sprintf(`{"type":"admit","participant":%q}`, patID))
	if got := ids(pat.expect("admitted"), "peers"); len(got) != 1 || got[0] != clinID {
		h.t.Fatalf("patient admitted with peers %v, want [%s]", got, clinID)
	}
	if m := clin.expect("peer"); m.str("event") != "joined" {
		h.t.Fatalf("clinician got %s, want peer joined", m)
	}
	if got := ids(clin.expect("waiting"), "waiting"); len(got) != 0 {
		h.t.Fatalf("waiting list after admission %v", got)
	}
	return clin, pat, clinID, patID
}

// eventually waits until cond holds, for at most waitFor.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(waitFor); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not so after %v: %s", waitFor, what)
		}
	}
}
