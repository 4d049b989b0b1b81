package signal

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

// client is one WebSocket connection. Its run goroutine is the actor: it alone handles the
// client's messages and writes to the socket. A reader goroutine and a pinger goroutine,
// both owned by run, feed it and end with it.
type client struct {
	s    *Server
	conn *websocket.Conn
	id   visit.Identity
	log  *slog.Logger

	// out holds messages for the socket, in order. Other goroutines (the room) put into it
	// without blocking; when it is full the client is too slow and is closed.
	out chan any
	// final holds the last message before closing (ended or bye) and the close status.
	final    chan final
	finished atomic.Bool // a final message was queued: nothing more goes out

	// What the SFU says waits until this connection has told its client that the call
	// goes through the SFU (welcome, admitted or mode): the SFU's goroutines run beside the
	// room's, and an offer queued before that message would reach a client that has no
	// SFU state yet and drops it (found with GOMAXPROCS 2: a subscriber that never received
	// anyone). mediaMu guards both.
	mediaMu   sync.Mutex
	sfuMode   bool
	mediaHeld []any

	// Owned by the run goroutine.
	presence *visit.Presence
	role     store.Role
	limiter  *rate.Limiter
	// actor is who acts on this connection, for the audit trail: the web layer's actor (the
	// address, the user agent, the account), then the participant once hello succeeds.
	actor audit.Actor
	// pairs is the last candidate pair reported per peer: only a change is recorded.
	pairs    map[string][2]Candidate
	visit    store.Visit // as at welcome
	admitted bool
	refresh  *time.Timer // fires when the ICE credentials need renewing; nil = none
}

// admittedNote is queued by the room on admission; the actor turns it into a fresh
// ice_servers message (relay credentials are for admitted participants) and the admitted
// message, in that order.
type admittedNote struct{ msg AdmittedMsg }

type final struct {
	msg    any
	status websocket.StatusCode
	reason string
}

// queue puts a message for the socket. It never blocks.
func (c *client) queue(v any) {
	if c.finished.Load() {
		return
	}
	select {
	case c.out <- v:
	default:
		c.finish(nil, websocket.StatusPolicyViolation, "too_slow")
	}
}

// finish queues the last message (may be nil) and the close status. Only the first call
// counts.
func (c *client) finish(v any, status websocket.StatusCode, reason string) {
	if c.finished.Swap(true) {
		return
	}
	c.final <- final{msg: v, status: status, reason: reason}
}

// visit.Member, called by the room with its lock held: queue and return.

func (c *client) Admitted(peers []visit.Peer, ms visit.MediaState) {
	c.queue(admittedNote{AdmittedMsg{Type: "admitted", Peers: peerInfos(peers), Mode: ms.Mode, SFUSession: ms.SFUSession}})
	c.announced(ms.Mode)
}

func (c *client) Mode(ms visit.MediaState) {
	c.queue(ModeMsg{Type: "mode", Mode: ms.Mode, SFUSession: ms.SFUSession})
	c.announced(ms.Mode)
}

// maxMediaHeld bounds what the SFU may say before the mode is announced: a new SFU
// participant's first offer, its candidates and track list are a handful.
const maxMediaHeld = 64

// queueMedia queues a message of the SFU's, or holds it until SFU mode is announced.
func (c *client) queueMedia(v any) {
	c.mediaMu.Lock()
	defer c.mediaMu.Unlock()
	if c.sfuMode {
		c.queue(v)
		return
	}
	if len(c.mediaHeld) == maxMediaHeld {
		c.log.Warn("sfu messages before the call's sfu mode: closing", "held", len(c.mediaHeld))
		c.finish(nil, websocket.StatusInternalError, "internal")
		return
	}
	c.mediaHeld = append(c.mediaHeld, v)
}

// The visit service holds the SFU's messages through it when it rejoins a participant to
// the SFU (it asks for this method by an interface of its own).
var _ interface{ HoldMedia() } = (*client)(nil)

// HoldMedia holds what the SFU says from now until the next Mode (visit's rejoinMedia: a
// new SFU participant's first offer must not reach the page before the mode message that
// names its session, or the page would apply it to the connections it is about to close).
func (c *client) HoldMedia() {
	c.mediaMu.Lock()
	defer c.mediaMu.Unlock()
	c.sfuMode = false
}

// announced is called once a message telling the client the call's mode has been queued
// (or written: the welcome); in SFU mode, what the SFU said meanwhile follows it.
func (c *client) announced(mode string) {
	if mode != visit.ModeSFU {
		return
	}
	c.mediaMu.Lock()
	defer c.mediaMu.Unlock()
	c.sfuMode = true
	for _, v := range c.mediaHeld {
		c.queue(v)
	}
	c.mediaHeld = nil
}

func (c *client) Chat(from, text string, at time.Time) {
	c.queue(ChatMsg{Type: "chat", From: from, Text: text, At: at.UTC()})
}

// visit.MediaSink, called by the SFU's goroutines: queue and return.

func (c *client) MediaDescription(pc, typ, sdp string) {
	c.queueMedia(SignalMsg{Type: "signal", From: SFU, PC: pc, Description: &Description{Type: typ, SDP: sdp}})
}

func (c *client) MediaCandidate(pc string, candidate []byte) {
	if candidate == nil {
		candidate = []byte("null")
	}
	c.queueMedia(SignalMsg{Type: "signal", From: SFU, PC: pc, Candidate: candidate})
}

func (c *client) Tracks(tracks []visit.Track) {
	out := make([]TrackInfo, 0, len(tracks))
	for _, t := range tracks {
		out = append(out, TrackInfo{Mid: t.Mid, Participant: t.Participant, Source: t.Source, Kind: t.Kind})
	}
	c.queueMedia(TracksMsg{Type: "tracks", Tracks: out})
}

func (c *client) Layers(source string, active []string) {
	if active == nil {
		active = []string{}
	}
	c.queueMedia(LayersMsg{Type: "layers", Source: source, Active: active})
}

func (c *client) Speakers(active string, speaking []string) {
	if speaking == nil {
		speaking = []string{}
	}
	c.queueMedia(SpeakersMsg{Type: "speakers", Active: active, Speaking: speaking})
}

func (c *client) VideoPaused(participant, source string, paused bool, link string) {
	c.queueMedia(VideoPausedMsg{Type: "video_paused", Participant: participant, Source: source, Paused: paused, Link: link})
}

func (c *client) WaitingChanged(list []visit.Waiting) {
	c.queue(WaitingMsg{Type: "waiting", Waiting: waitingInfos(list)})
}

func (c *client) PeerEvent(ev visit.PeerEvent, p visit.Peer) {
	c.queue(PeerMsg{Type: "peer", Event: string(ev), Peer: peerInfo(p)})
}

func (c *client) Signal(from string, payload any) {
	in := payload.(Incoming)
	if in.Type == "e2ee" {
		c.queue(E2EEMsg{Type: "e2ee", From: from, Pub: in.Pub, KID: in.KID, Key: in.Key})
		return
	}
	c.queue(SignalMsg{Type: "signal", From: from, Description: in.Description, Candidate: in.Candidate, Sources: in.Sources})
}

func (c *client) Ended(reason string) {
	c.finish(EndedMsg{Type: "ended", Reason: reason}, websocket.StatusNormalClosure, "ended")
}

func (c *client) Bye(reason string) {
	status := websocket.StatusNormalClosure
	if reason == "server_shutdown" {
		status = websocket.StatusGoingAway
	}
	c.finish(ByeMsg{Type: "bye", Reason: reason}, status, reason)
}

type readResult struct {
	data []byte
	err  error // the connection is gone
	big  bool  // over MaxMessage: dropped
	text bool
}

func (c *client) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	c.actor = audit.ActorFrom(ctx)
	defer func() {
		cancel()
		c.conn.CloseNow()
		wg.Wait()
		if c.presence != nil {
			c.presence.Disconnect(audit.WithActor(context.WithoutCancel(ctx), c.actor))
		}
	}()
	c.limiter = rate.NewLimiter(ratePerSecS, rateBurst)

	inbox := make(chan readResult)
	wg.Add(2)
	go func() { defer wg.Done(); c.readLoop(ctx, inbox) }()
	go func() { defer wg.Done(); c.pingLoop(ctx, cancel) }()
	defer func() {
		if c.refresh != nil {
			c.refresh.Stop()
		}
	}()
	// A signed-in user in a call keeps the sign-in session from idling out: the call is
	// the activity (docs/security.md, "Sessions").
	var keepAlive <-chan time.Time
	if c.id.KeepAlive != nil {
		t := time.NewTicker(c.s.cfg.KeepAliveEvery)
		defer t.Stop()
		keepAlive = t.C
	}

	for {
		var refresh <-chan time.Time
		if c.refresh != nil {
			refresh = c.refresh.C
		}
		select {
		case <-ctx.Done():
			return
		case f := <-c.final:
			c.flush(ctx)
			if f.msg != nil {
				c.write(ctx, f.msg)
			}
			c.conn.Close(f.status, f.reason)
			return
		case v := <-c.out:
			if !c.writeOut(ctx, v) {
				return
			}
		case <-refresh:
			c.refresh = nil
			if !c.sendICE(ctx, false) {
				return
			}
		case <-keepAlive:
			if c.presence != nil && c.presence.InCall() {
				if err := c.id.KeepAlive(ctx); err != nil {
					c.log.Warn("cannot keep the sign-in session alive", "err", err)
				}
			}
		case in := <-inbox:
			if in.err != nil {
				return
			}
			c.handle(audit.WithActor(ctx, c.actor), in)
		}
	}
}

// flush writes what is queued before the final message.
func (c *client) flush(ctx context.Context) {
	for {
		select {
		case v := <-c.out:
			if !c.writeOut(ctx, v) {
				return
			}
		default:
			return
		}
	}
}

// writeOut writes a queued message; an admission becomes ice_servers and admitted.
func (c *client) writeOut(ctx context.Context, v any) bool {
	if n, ok := v.(admittedNote); ok {
		c.admitted = true
		if !c.sendICE(ctx, false) {
			return false
		}
		v = n.msg
	}
	return c.write(ctx, v)
}

// iceConfig asks for this participant's ICE configuration and schedules its renewal.
func (c *client) iceConfig(welcome bool) ICEConfig {
	ice := c.s.cfg.ICE(ICERequest{Participant: c.presence.Participant(), Visit: c.visit, Admitted: c.admitted, Welcome: welcome})
	if c.refresh != nil {
		c.refresh.Stop()
		c.refresh = nil
	}
	if !ice.Expires.IsZero() {
		// At four fifths of the credential's life: time to use it in ICE restarts.
		left := time.Until(ice.Expires)
		c.refresh = time.NewTimer(max(left-left/5, time.Second))
	}
	return ice
}

// sendICE sends fresh ICE servers (ice_servers message).
func (c *client) sendICE(ctx context.Context, welcome bool) bool {
	ice := c.iceConfig(welcome)
	return c.write(ctx, ICEServersMsg{Type: "ice_servers", ICEServers: ice.Servers, ICETransportPolicy: ice.Policy})
}

func (c *client) write(ctx context.Context, v any) bool {
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.WriteWait)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, encode(v)); err != nil {
		c.log.Debug("websocket write failed", "err", err)
		return false
	}
	return true
}

// readLoop reads messages until the connection fails. Messages over MaxMessage are read
// to the end and dropped, so the connection stays usable.
func (c *client) readLoop(ctx context.Context, inbox chan<- readResult) {
	for {
		typ, r, err := c.conn.Reader(ctx)
		var res readResult
		if err != nil {
			res.err = err
		} else {
			res.text = typ == websocket.MessageText
			res.data, err = io.ReadAll(io.LimitReader(r, MaxMessage+1))
			if err == nil && len(res.data) > MaxMessage {
				res.big, res.data = true, nil
				_, err = io.Copy(io.Discard, r)
			}
			res.err = err
		}
		select {
		case inbox <- res:
		case <-ctx.Done():
			return
		}
		if res.err != nil {
			return
		}
	}
}

// pingLoop pings every PingEvery and ends the connection when a pong is late.
func (c *client) pingLoop(ctx context.Context, cancel context.CancelFunc) {
	t := time.NewTicker(c.s.cfg.PingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, pcancel := context.WithTimeout(ctx, c.s.cfg.PongWait)
			err := c.conn.Ping(pctx)
			pcancel()
			if err != nil {
				if ctx.Err() == nil {
					c.log.Info("signalling connection lost: no pong")
				}
				cancel()
				return
			}
		}
	}
}

func (c *client) replyError(code, message, inReplyTo string) {
	c.queue(errorMsg(code, message, inReplyTo))
}

// handle validates and carries out one message.
func (c *client) handle(ctx context.Context, in readResult) {
	if !c.limiter.Allow() {
		c.replyError(CodeRateLimited, "Too many messages; slow down.", "")
		return
	}
	if in.big {
		c.replyError(CodeTooLarge, "Messages may be at most 64 KiB.", "")
		return
	}
	if !in.text {
		c.replyError(CodeBadJSON, "Send JSON text messages.", "")
		return
	}
	msg, err := Decode(in.data)
	if err != nil {
		code, text := errorCode(err)
		c.replyError(code, text, truncate(msg.Type, 32))
		return
	}
	if msg.Type != "hello" && c.presence == nil {
		c.replyError(CodeHelloRequired, "Send hello first.", msg.Type)
		return
	}
	if c.presence != nil && !auth.Can(c.role, messagePolicy[msg.Type]) {
		c.replyError(CodeForbidden, "You may not do that in this visit.", msg.Type)
		return
	}
	switch msg.Type {
	case "hello":
		c.hello(ctx, msg)
		return
	case "signal":
		if c.presence.Participant().Observer && msg.Description != nil && sdpSendsMedia(msg.Description.SDP) {
			// An observer publishes nothing: a description that would send audio or video
			// is refused before it reaches anyone (the SFU refuses its pub offers too).
			err = visit.ErrForbidden
			break
		}
		if msg.To == SFU {
			err = c.presence.MediaSignal(mediaSignal(msg))
			break
		}
		err = c.presence.Relay(msg.To, msg)
	case "e2ee":
		err = c.presence.Relay(msg.To, msg)
	case "video_size":
		err = c.presence.VideoSize(msg.Participant, msg.Source, msg.Width, msg.Height)
	case "chat":
		err = c.presence.Chat(msg.ChatID, msg.Text, time.Now())
	case "video_paused":
		err = c.presence.VideoPaused(msg.Source, msg.Paused)
	case "admit":
		err = c.presence.Admit(ctx, msg.Participant)
	case "remove":
		err = c.presence.Remove(ctx, msg.Participant)
	case "end":
		err = c.presence.End(ctx)
	case "leave":
		c.presence.Leave(ctx)
	case "ping":
		c.queue(PongMsg{Type: "pong"})
	case "connection":
		err = c.connection(ctx, msg)
	}
	if err != nil {
		code, text := errorCode(err)
		if code == CodeInternal {
			c.log.Warn("signalling message failed", "type", msg.Type, "err", err)
		}
		c.replyError(code, text, msg.Type)
	}
}

// mediaSignal is a signal to the SFU as the visit service takes it.
func mediaSignal(msg Incoming) visit.MediaSignal {
	s := visit.MediaSignal{PC: msg.PC, Candidate: msg.Candidate, Sources: msg.Sources, Session: msg.SFUSession}
	if d := msg.Description; d != nil {
		s.Type, s.SDP = d.Type, d.SDP
	}
	return s
}

// recordPath records a peer connection's selected candidate pair in the audit trail
// (direct or relayed), once per change per peer.
func (c *client) recordPath(ctx context.Context, peer string, local, remote Candidate) {
	if c.pairs == nil {
		c.pairs = map[string][2]Candidate{}
	}
	key := [2]Candidate{local, remote}
	if c.pairs[peer] == key || len(c.pairs) > 64 {
		return
	}
	c.pairs[peer] = key
	path := "direct"
	if local.Type == "relay" || remote.Type == "relay" {
		path = "relay"
	}
	e := audit.EventFrom(ctx, audit.CandidatePair)
	e.VisitID, e.SubjectID = c.presence.Participant().VisitID, peer
	e.Detail = map[string]string{"local": local.Type, "remote": remote.Type, "protocol": local.Protocol, "path": path}
	if local.RelayProtocol != "" {
		e.Detail["relay_protocol"] = local.RelayProtocol
	}
	if err := c.s.cfg.Audit.Record(ctx, e); err != nil {
		c.log.Error("audit trail: cannot record", "action", string(e.Action), "err", err)
	}
}

// hello joins the visit. A refused hello closes the connection: there is nothing else the
// client can do on it.
func (c *client) hello(ctx context.Context, msg Incoming) {
	if c.presence != nil {
		c.replyError(CodeAlreadyJoined, "This connection has already joined.", "hello")
		return
	}
	refuse := func(err error) {
		code, text := errorCode(err)
		if code == CodeInternal {
			c.log.Warn("hello failed", "err", err)
		}
		c.finish(errorMsg(code, text, "hello"), websocket.StatusPolicyViolation, code)
	}
	canAdmit := false
	if u := c.id.User; u != nil {
		if msg.Visit == "" {
			refuse(invalid("visit is required."))
			return
		}
		v, err := c.s.cfg.Visits.Get(ctx, msg.Visit)
		if err != nil {
			refuse(err)
			return
		}
		emergency := c.id.Emergency && !auth.CanOnVisit(*u, auth.ActVisitJoin, v.ClinicianID)
		if !auth.CanOnVisit(*u, auth.ActVisitJoin, v.ClinicianID) && !(emergency && auth.CanOnVisitEmergency(*u, auth.ActVisitJoin)) {
			refuse(visit.ErrForbidden)
			return
		}
		canAdmit = auth.CanOnVisit(*u, auth.ActVisitAdmit, v.ClinicianID) || (emergency && auth.CanOnVisitEmergency(*u, auth.ActVisitAdmit))
		if emergency {
			c.log.Warn("break-glass access used", "user", u.ID, "visit", v.ID, "action", string(auth.ActVisitJoin))
			e := audit.EventFrom(ctx, audit.BreakGlassUse)
			e.VisitID, e.SubjectID, e.Detail = v.ID, v.ClinicianID, map[string]string{"action": string(auth.ActVisitJoin)}
			if err := c.s.cfg.Audit.Record(ctx, e); err != nil {
				c.log.Error("audit trail: cannot record", "action", string(e.Action), "err", err)
			}
		}
	}
	p, w, err := c.s.cfg.Visits.Connect(ctx, c.id, msg.Visit, msg.Session, canAdmit, c)
	if errors.Is(err, visit.ErrNotFound) && c.id.User == nil {
		err = visit.ErrForbidden
	}
	if err != nil {
		refuse(err)
		return
	}
	c.presence = p
	c.role = w.Participant.Role
	if c.id.User == nil { // a link holder acts as its participant
		c.actor.ID, c.actor.Role = w.Participant.ID, string(w.Participant.Role)
	}
	c.visit = w.Visit
	c.admitted = w.Admitted
	ice := c.iceConfig(true)
	mode := w.Media.Mode
	if mode == "" {
		mode = visit.ModeP2P
	}
	welcome := WelcomeMsg{
		Type:               "welcome",
		Participant:        ParticipantInfo{ID: w.Participant.ID, Role: string(w.Participant.Role), Name: w.Participant.Name, Observer: w.Participant.Observer},
		Visit:              VisitInfo{ID: w.Visit.ID, State: string(w.Visit.State)},
		Admitted:           w.Admitted,
		ICEServers:         ice.Servers,
		ICETransportPolicy: ice.Policy,
		Peers:              peerInfos(w.Peers),
		Mode:               mode,
		SFUSession:         w.Media.SFUSession,
	}
	if w.CanAdmit {
		welcome.Waiting = waitingInfos(w.Waiting)
	}
	// The welcome must precede anything the room queued while we joined; write it directly
	// (the actor owns the socket, and the room's messages wait in out until we return).
	if !c.write(ctx, welcome) {
		c.finish(nil, websocket.StatusInternalError, "write failed")
		return
	}
	c.announced(mode)
}

// connection takes a participant's report of its selected candidate pair.
func (c *client) connection(ctx context.Context, msg Incoming) error {
	if !c.presence.Admitted() {
		return visit.ErrNotAdmitted
	}
	if msg.Peer == c.presence.Participant().ID {
		return invalid("peer is yourself.")
	}
	peer := msg.Peer
	if peer == SFU {
		peer = SFU + ":" + msg.PC // one pair per connection with the SFU
	}
	if c.s.cfg.Connection != nil {
		c.s.cfg.Connection(ctx, ConnectionReport{
			VisitID: c.visit.ID, ParticipantID: c.presence.Participant().ID, Role: c.role,
			PeerID: peer, Local: *msg.Local, Remote: *msg.Remote,
		})
	}
	c.recordPath(ctx, peer, *msg.Local, *msg.Remote)
	return nil
}
