package visit_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/store/sqlite"
	"github.com/bedside/bedside/internal/visit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a fake time source the test advances by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const linkTTL = 24 * time.Hour

// env is a Manager on a real SQLite store, with a fake clock and one account of each role.
type env struct {
	st        *sqlite.Store
	m         *visit.Manager
	clk       *clock
	clinician store.User // Dr Rivera, holds the visits
	other     store.User // another clinician
	staff     store.User
	admin     store.User
	disabled  store.User // a disabled clinician
}

func newEnv(t testing.TB, cfg visit.Config) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)}
	if cfg.LinkTTL == 0 {
		cfg.LinkTTL = linkTTL
	}
	cfg.Now = clk.Now
	e := &env{st: st, m: visit.NewManager(st, cfg), clk: clk}
	add := func(email, name string, role store.Role, disabled bool) store.User {
		u := store.User{ID: store.NewID("usr"), Email: email, Name: name, Role: role, PasswordHash: "unused", Disabled: disabled, CreatedAt: clk.Now()}
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	e.clinician = add("rivera@clinic.example", "Dr Rivera", store.RoleClinician, false)
	e.other = add("okafor@clinic.example", "Dr Okafor", store.RoleClinician, false)
	e.staff = add("desk@clinic.example", "Front Desk", store.RoleStaff, false)
	e.admin = add("admin@clinic.example", "Admin", store.RoleAdmin, false)
	e.disabled = add("gone@clinic.example", "Dr Gone", store.RoleClinician, true)
	return e
}

// newVisit creates a visit of e.clinician scheduled now and returns it with its link token.
func (e *env) newVisit(t testing.TB) (store.Visit, string) {
	t.Helper()
	v, tok, err := e.m.Create(context.Background(), visit.NewVisit{ClinicianID: e.clinician.ID, PatientName: "Ada Lovelace"})
	if err != nil {
		t.Fatal(err)
	}
	return v, tok
}

// join turns the link into a new patient and returns the participant and its cookie.
func (e *env) join(t testing.TB, token, name string) (store.Participant, string) {
	t.Helper()
	p, _, cookie, err := e.m.JoinLink(context.Background(), token, name, "")
	if err != nil {
		t.Fatal(err)
	}
	return p, cookie
}

func (e *env) visit(t testing.TB, id string) store.Visit {
	t.Helper()
	v, err := e.st.VisitByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *env) participant(t testing.TB, id string) store.Participant {
	t.Helper()
	p, err := e.st.ParticipantByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeMember is a connection as the room sees it: it records every call, in order, as a
// short line ("admitted [prt_x clinician polite]", "peer gone prt_y", ...).
type fakeMember struct {
	mu     sync.Mutex
	events []string
}

var _ visit.Member = (*fakeMember)(nil)

func peerString(p visit.Peer) string {
	s := p.ID + " " + string(p.Role)
	if p.Polite {
		s += " polite"
	}
	return s
}

func (f *fakeMember) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, fmt.Sprintf(format, args...))
}

func (f *fakeMember) Admitted(peers []visit.Peer, ms visit.MediaState) {
	ps := make([]string, len(peers))
	for i, p := range peers {
		ps[i] = peerString(p)
	}
	if ms.Mode == visit.ModeSFU {
		f.record("admitted [%s] sfu", strings.Join(ps, ", "))
		return
	}
	f.record("admitted [%s]", strings.Join(ps, ", "))
}

func (f *fakeMember) Mode(ms visit.MediaState) { f.record("mode %s", ms.Mode) }
func (f *fakeMember) Chat(from, text string, _ time.Time) {
	f.record("chat from %s: %s", from, text)
}
func (f *fakeMember) MediaDescription(pc, typ, _ string)    { f.record("media %s %s", pc, typ) }
func (f *fakeMember) MediaCandidate(pc string, _ []byte)    { f.record("media %s candidate", pc) }
func (f *fakeMember) Tracks(ts []visit.Track)               { f.record("tracks %d", len(ts)) }
func (f *fakeMember) Layers(source string, active []string) { f.record("layers %s %v", source, active) }
func (f *fakeMember) VideoPaused(participant, source string, paused bool, link string) {
	f.record("video_paused %s %s %t %s", participant, source, paused, link)
}
func (f *fakeMember) Speakers(active string, speaking []string) { f.record("speakers %s", active) }

func (f *fakeMember) WaitingChanged(list []visit.Waiting) {
	ids := make([]string, len(list))
	for i, w := range list {
		ids[i] = w.ID + " " + w.Name
	}
	f.record("waiting [%s]", strings.Join(ids, ", "))
}

func (f *fakeMember) PeerEvent(ev visit.PeerEvent, p visit.Peer) {
	f.record("peer %s %s", ev, peerString(p))
}

func (f *fakeMember) Signal(from string, payload any) { f.record("signal from %s: %v", from, payload) }
func (f *fakeMember) Ended(reason string)             { f.record("ended %s", reason) }
func (f *fakeMember) Bye(reason string)               { f.record("bye %s", reason) }

// take returns the events recorded since the last take.
func (f *fakeMember) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ev := f.events
	f.events = nil
	return ev
}

// has reports whether event was recorded (and not yet taken).
func (f *fakeMember) has(event string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.events, event)
}

// expect checks that exactly want was recorded since the last take.
func expect(t *testing.T, who string, f *fakeMember, want ...string) {
	t.Helper()
	got := f.take()
	if !slices.Equal(got, want) {
		t.Errorf("%s received:\n  %s\nwant:\n  %s", who, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
