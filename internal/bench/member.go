package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/bedside/bedside/internal/client"
)

// member is one load client: a person in a visit, over the real HTTP API and signalling
// protocol, with pion peer connections for media.
type member struct {
	idx       int
	room      int
	clinician bool
	pub       *publisher // nil: does not publish
	subscribe bool
	w         *window
	api       *webrtc.API
	stamps    *rxStamps // socket receive times of the member's RTP packets
	dbg       *debugLog

	http    *client.Client
	conn    *client.Conn
	self    string // participant id (written under mu)
	welcome client.Welcome

	wsOpen   int64 // when the WebSocket was open (bench clock)
	firstRTP *firstTime

	audio, video *webrtc.TrackLocalStaticRTP // p2p mode

	mode string   // p2p or sfu (under mu)
	sfu  *sfuConn // SFU mode (under mu)

	mu     sync.Mutex
	rx     []*trackRx
	p2p    map[string]*webrtc.PeerConnection // peer id -> connection (p2p mode)
	admit  map[string]bool                   // waiting participants already admitted (clinician)
	failed error                             // first media error
}

func (m *member) newRx() *trackRx {
	rx := newTrackRx(m.w)
	m.mu.Lock()
	m.rx = append(m.rx, rx)
	m.mu.Unlock()
	return rx
}

func (m *member) fail(err error) {
	m.mu.Lock()
	if m.failed == nil {
		m.failed = err
	}
	m.mu.Unlock()
}

// dial opens the WebSocket and says hello. visitID is "" for link holders.
func (m *member) dial(ctx context.Context, visitID string) error {
	conn, err := m.http.Dial(ctx, !m.clinician)
	if err != nil {
		return fmt.Errorf("websocket: %w", err)
	}
	m.wsOpen = now()
	call, err := client.Join(ctx, conn, visitID, false)
	if err != nil {
		conn.Close()
		return err
	}
	m.mu.Lock() // state() reads self from another goroutine
	m.conn = conn
	m.self, m.welcome = call.Welcome.Participant.ID, call.Welcome
	m.mu.Unlock()
	return nil
}

// run handles signalling messages until ctx ends or the connection closes.
func (m *member) run(ctx context.Context, welcome client.Welcome) {
	m.setMode(welcome.Mode, welcome.SFUSession)
	if m.p2pMode() {
		for _, p := range welcome.Peers {
			m.learn(ctx, p)
		}
	}
	if m.clinician {
		m.admitWaiting(ctx, welcome.Waiting)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-m.conn.In:
			if !ok {
				return
			}
			m.handle(ctx, msg)
		}
	}
}

func (m *member) handle(ctx context.Context, msg client.Message) {
	switch msg.Type {
	case "waiting":
		var w struct{ Waiting []client.Waiting }
		if msg.Decode(&w) == nil && m.clinician {
			m.admitWaiting(ctx, w.Waiting)
		}
	case "admitted", "mode":
		var a struct {
			Peers      []client.PeerInfo
			Mode       string
			SFUSession string `json:"sfu_session"`
		}
		msg.Decode(&a)
		m.setMode(a.Mode, a.SFUSession)
		if m.p2pMode() {
			for _, p := range a.Peers {
				m.learn(ctx, p)
			}
		}
	case "layers":
		var l struct {
			Source string
			Active []string
		}
		if msg.Decode(&l) == nil && l.Source == "camera" && m.pub != nil {
			m.dbg.printf("member %d: layers %v", m.idx, l.Active)
			m.pub.setActive(l.Active)
		}
	case "peer":
		var e struct {
			Event string
			Peer  client.PeerInfo
		}
		msg.Decode(&e)
		switch {
		case !m.p2pMode(): // the SFU carries everyone
		case e.Event == "joined":
			m.learn(ctx, e.Peer)
		case e.Event == "left", e.Event == "gone":
			m.drop(e.Peer.ID)
		}
	case "signal":
		var s client.SignalIn
		if err := msg.Decode(&s); err != nil {
			return
		}
		var err error
		if s.From == "sfu" {
			err = m.sfuSignal(s)
		} else {
			err = m.signal(ctx, s)
		}
		if err != nil {
			m.fail(fmt.Errorf("signal from %s: %w", s.From, err))
		}
	case "error":
		var e struct{ Code, Message string }
		msg.Decode(&e)
		m.fail(fmt.Errorf("server error %s: %s", e.Code, e.Message))
	}
}

// admitWaiting admits everyone waiting (once each).
func (m *member) admitWaiting(ctx context.Context, ws []client.Waiting) {
	for _, w := range ws {
		m.mu.Lock()
		done := m.admit[w.ID]
		if m.admit == nil {
			m.admit = map[string]bool{}
		}
		m.admit[w.ID] = true
		m.mu.Unlock()
		if !done {
			m.conn.Send(ctx, map[string]string{"type": "admit", "participant": w.ID})
		}
	}
}

// setMode follows the call's mode: "sfu" opens the SFU connections (once per SFU session).
// The bench runs visits whose policy is sfu or p2p, so a call never moves while measured.
func (m *member) setMode(mode, session string) {
	switch mode {
	case "sfu":
		m.enterSFU(session)
	case "p2p", "":
		m.mu.Lock()
		if m.mode == "" {
			m.mode = "p2p"
		}
		m.mu.Unlock()
	}
}

func (m *member) p2pMode() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mode != "sfu"
}

func (m *member) send(v any) error { return m.conn.Send(context.Background(), v) }

// close ends the member's connections.
func (m *member) close() {
	m.mu.Lock()
	pcs, s := m.p2p, m.sfu
	m.p2p = nil
	m.mu.Unlock()
	for _, pc := range pcs {
		pc.Close()
	}
	if s != nil {
		s.close()
	}
	m.mu.Lock()
	conn := m.conn
	m.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// debugLog prints what the load clients see, for diagnosing the bench or the server
// (--debug): signalling events, key frame requests, and per track what arrived. nil prints
// nothing.
type debugLog struct {
	mu  sync.Mutex
	w   io.Writer
	sdp bool // the sub connections' offers and answers too
}

func (d *debugLog) printf(format string, args ...any) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.w, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}
