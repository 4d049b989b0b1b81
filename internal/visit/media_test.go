package visit_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

// fakeMedia records what the rooms tell the SFU.
type fakeMedia struct {
	mu     sync.Mutex
	events []string
	n      int
}

func (f *fakeMedia) rec(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, fmt.Sprintf(format, args...))
}

func (f *fakeMedia) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.events
	f.events = nil
	return e
}

func (f *fakeMedia) Join(visitID string, m visit.MediaMember) string {
	f.mu.Lock()
	f.n++
	n := f.n
	f.mu.Unlock()
	f.rec("join %s observer=%v", m.ID, m.Observer)
	return fmt.Sprintf("f_%d", n)
}
func (f *fakeMedia) Leave(visitID, id string)        { f.rec("leave %s", id) }
func (f *fakeMedia) Disconnected(visitID, id string) { f.rec("disconnected %s", id) }
func (f *fakeMedia) Signal(visitID, id string, s visit.MediaSignal) error {
	f.rec("signal %s %s %s", id, s.PC, s.Type)
	return nil
}
func (f *fakeMedia) VideoSize(visitID, sub, pub, src string, w, h int) {
	f.rec("size %s %s %s %dx%d", sub, pub, src, w, h)
}
func (f *fakeMedia) CloseRoom(visitID string) { f.rec("close") }

func newMediaEnv(t *testing.T, policy store.MediaPolicy) (*env, *fakeMedia, *call) {
	t.Helper()
	fm := &fakeMedia{}
	e := newEnv(t, visit.Config{Media: fm})
	v, tok, err := e.m.Create(context.Background(), visit.NewVisit{ClinicianID: e.clinician.ID, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	doc := &fakeMember{}
	pr, w, err := e.m.Connect(context.Background(), visit.Identity{User: &e.clinician}, v.ID, "doc-session-1", true, doc)
	if err != nil {
		t.Fatal(err)
	}
	return e, fm, &call{e: e, v: v, token: tok, doc: doc, docPr: pr, docID: pr.Participant().ID, welcome: w}
}

// TestModeAuto: two people stay peer to peer; the third admitted moves the call to the
// SFU: everyone already in is joined to it and told (mode), the newcomer's admission says
// so; nobody reconnects. Once in SFU mode the visit stays there.
func TestModeAuto(t *testing.T) {
	ctx := context.Background()
	e, fm, c := newMediaEnv(t, store.PolicyAuto)
	if c.welcome.Media.Mode != visit.ModeP2P {
		t.Fatalf("alone: %+v", c.welcome.Media)
	}
	_, ada, _ := c.patient(t, "Ada", "ada-1")
	adaID := waitingID(t, e, c.v.ID)
	if err := c.docPr.Admit(ctx, adaID); err != nil {
		t.Fatal(err)
	}
	if got := fm.take(); len(got) != 0 {
		t.Fatalf("two people: the SFU was told %v", got)
	}
	expectHas(t, "Ada", ada, "admitted [", "")
	// Peer to peer a video_paused goes nowhere (the pages use their data channel).
	ada.take()
	if err := c.docPr.VideoPaused("camera", true); err != nil {
		t.Fatal(err)
	}
	for _, ev := range ada.take() {
		if strings.HasPrefix(ev, "video_paused") {
			t.Errorf("peer to peer, Ada got %q", ev)
		}
	}
	guestPr, guest, _ := c.patient(t, "Grace", "grace-1")
	graceID := waitingID(t, e, c.v.ID)
	c.doc.take()
	ada.take()
	if err := c.docPr.Admit(ctx, graceID); err != nil {
		t.Fatal(err)
	}
	joins := fm.take()
	slices.Sort(joins)
	want := []string{"join " + adaID + " observer=false", "join " + c.docID + " observer=false", "join " + graceID + " observer=false"}
	slices.Sort(want)
	if !slices.Equal(joins, want) {
		t.Errorf("the SFU was told %v, want %v", joins, want)
	}
	if !ada.has("mode sfu") || !c.doc.has("mode sfu") {
		t.Errorf("the two already in were not told: %v / %v", ada.take(), c.doc.take())
	}
	expectHas(t, "the third", guest, "admitted [", "] sfu")
	if e.m.Mode(c.v.ID) != visit.ModeSFU {
		t.Errorf("mode %q", e.m.Mode(c.v.ID))
	}
	// SFU messages go through; an observer's publish would not (see TestModeObserver).
	if err := guestPr.MediaSignal(visit.MediaSignal{PC: "pub", Type: "offer", SDP: "v=0"}); err != nil {
		t.Fatal(err)
	}
	if err := guestPr.VideoSize(adaID, "camera", 320, 180); err != nil {
		t.Fatal(err)
	}
	if got := fm.take(); !slices.Equal(got, []string{"signal " + graceID + " pub offer", "size " + graceID + " " + adaID + " camera 320x180"}) {
		t.Errorf("the SFU got %v", got)
	}
	// Down to two again: still the SFU. The leaver leaves the SFU; a lost connection is
	// only disconnected.
	guestPr.Leave(ctx)
	if got := fm.take(); !slices.Equal(got, []string{"leave " + graceID}) {
		t.Errorf("after a leave: %v", got)
	}
	if e.m.Mode(c.v.ID) != visit.ModeSFU {
		t.Error("the visit left the SFU")
	}
	if _, err := e.m.End(ctx, c.v.ID); err != nil {
		t.Fatal(err)
	}
	if got := fm.take(); !slices.Contains(got, "close") {
		t.Errorf("ending the visit: %v", got)
	}
}

// TestModePolicies: p2p never uses the SFU; sfu does from the first person on; a
// peer-to-peer visit refuses SFU signals.
func TestModePolicies(t *testing.T) {
	ctx := context.Background()
	e, fm, c := newMediaEnv(t, store.PolicyP2P)
	for i, name := range []string{"Ada", "Grace", "Ann"} {
		c.patient(t, name, fmt.Sprintf("s-%d-session", i))
		if err := c.docPr.Admit(ctx, waitingID(t, e, c.v.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if got := fm.take(); len(got) != 0 || e.m.Mode(c.v.ID) != visit.ModeP2P {
		t.Errorf("policy p2p with four people: %v, mode %s", got, e.m.Mode(c.v.ID))
	}
	if err := c.docPr.MediaSignal(visit.MediaSignal{PC: "pub", Type: "offer", SDP: "v=0"}); !errors.Is(err, visit.ErrNotSFU) {
		t.Errorf("an SFU signal in a peer-to-peer call: %v", err)
	}

	_, fm2, c2 := newMediaEnv(t, store.PolicySFU)
	if c2.welcome.Media.Mode != visit.ModeSFU || c2.welcome.Media.SFUSession == "" {
		t.Errorf("policy sfu, alone: %+v", c2.welcome.Media)
	}
	if got := fm2.take(); len(got) != 1 {
		t.Errorf("policy sfu: the SFU was told %v", got)
	}
}

// TestModeObserver: an observer joins the SFU as one and may not publish; a reconnect
// with the same session keeps its SFU session; a lost connection is reported.
func TestModeObserver(t *testing.T) {
	ctx := context.Background()
	e, fm, c := newMediaEnv(t, store.PolicySFU)
	fm.take()
	g, tok, err := e.m.Invite(ctx, c.v.ID, store.GuestObserver)
	if err != nil || g.Role != store.GuestObserver {
		t.Fatal(err)
	}
	p, _, _, err := e.m.JoinLink(ctx, tok, "Student", "")
	if err != nil {
		t.Fatal(err)
	}
	pr, _, _ := c.connect(t, p.ID, "obs-session-1")
	if err := c.docPr.Admit(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if got := fm.take(); !slices.Equal(got, []string{"join " + p.ID + " observer=true"}) {
		t.Fatalf("observer admitted: %v", got)
	}
	if err := pr.MediaSignal(visit.MediaSignal{PC: "pub", Type: "offer", SDP: "v=0"}); !errors.Is(err, visit.ErrForbidden) {
		t.Errorf("an observer's publish: %v", err)
	}
	if err := pr.MediaSignal(visit.MediaSignal{PC: "sub", Type: "answer", SDP: "v=0"}); err != nil {
		t.Errorf("an observer's subscription: %v", err)
	}
	fm.take()
	pr.Disconnect(ctx)
	if got := fm.take(); !slices.Equal(got, []string{"disconnected " + p.ID}) {
		t.Errorf("a lost connection: %v", got)
	}
	obsPr, obs, w := c.connect(t, p.ID, "obs-session-1")
	if w.Media.Mode != visit.ModeSFU || w.Media.SFUSession == "" {
		t.Errorf("back: %+v", w.Media)
	}
	// Chat through the server reaches the others. A repeat of a message's id (a page
	// sending again what its old connection may have delivered) is dropped, also when it
	// comes on the sender's next connection.
	c.doc.take()
	obs.take()
	send := func(pr *visit.Presence, id, text string) {
		t.Helper()
		if err := pr.Chat(id, text, time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	send(c.docPr, "", "hello")
	send(c.docPr, "", "hello") // no id: nothing to know it by
	send(c.docPr, "m-0000000001", "one")
	send(c.docPr, "m-0000000001", "one")
	doc2, _, _ := c.connect(t, c.docID, "doc-session-1") // the clinician's WebSocket came back
	send(doc2, "m-0000000001", "one")
	send(doc2, "m-0000000002", "two")
	from := "chat from " + c.docID + ": "
	var got []string
	for _, ev := range obs.take() {
		if strings.HasPrefix(ev, "chat ") {
			got = append(got, ev)
		}
	}
	if want := []string{from + "hello", from + "hello", from + "one", from + "two"}; !slices.Equal(got, want) {
		t.Errorf("the observer got %q, want %q", got, want)
	}
	// A participant that paused its own video for want of bandwidth tells the others, the
	// observer included; an observer, who publishes nothing, may not say so.
	obs.take()
	if err := doc2.VideoPaused("camera", true); err != nil {
		t.Fatal(err)
	}
	if got, want := obs.take(), []string{"video_paused " + c.docID + " camera true theirs"}; !slices.Equal(got, want) {
		t.Errorf("the observer got %q, want %q", got, want)
	}
	if err := obsPr.VideoPaused("camera", true); !errors.Is(err, visit.ErrForbidden) {
		t.Errorf("an observer's video_paused: %v", err)
	}
}

func waitingID(t *testing.T, e *env, visitID string) string {
	t.Helper()
	ws := e.m.Waiting(visitID)
	if len(ws) == 0 {
		t.Fatal("nobody waiting")
	}
	return ws[len(ws)-1].ID
}

// expectHas checks that f recorded an event starting with prefix and ending with suffix.
func expectHas(t *testing.T, who string, f *fakeMember, prefix, suffix string) {
	t.Helper()
	for _, ev := range f.take() {
		if len(ev) >= len(prefix) && ev[:len(prefix)] == prefix && (suffix == "" || ev[len(ev)-len(suffix):] == suffix) {
			return
		}
	}
	t.Errorf("%s: no event %q...%q", who, prefix, suffix)
}
