// Package signal is the WebSocket signalling endpoint of docs/protocol.md: one actor
// goroutine per client, versioned JSON messages, every message validated and checked against
// the role policy. It relays SDP and candidates through the visit package, which decides who
// may talk to whom; it holds no visit state of its own.
package signal

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

// Timing of liveness checks: a ping every PingEvery, and a connection whose pong is later
// than PongWait is closed. A vanished browser is thus noticed within 15 s, inside the
// 20 s the product promises.
const (
	PingEvery  = 5 * time.Second
	PongWait   = 10 * time.Second
	WriteWait  = 5 * time.Second // a write that takes longer closes the connection
	outboxSize = 64              // see docs/protocol.md: a full outbox closes the connection
)

// KeepAliveEvery is how often a signed-in user's connection refreshes the idle timer of
// its sign-in session while the user is in a call (visit.Identity.KeepAlive): well inside
// the shortest idle time (docs/security.md, "Sessions").
const KeepAliveEvery = time.Minute

// Message rate limit per connection: a burst of candidates at call set-up fits; a flood
// does not.
const (
	rateBurst   = 200
	ratePerSecS = 50
)

// messagePolicy names the action each message needs. A message type missing here cannot be
// handled (TestEveryMessageHasPolicy). hello is checked against the visit itself.
var messagePolicy = map[string]auth.Action{
	"hello":  auth.ActNone,
	"signal": auth.ActVisitSignal,
	"admit":  auth.ActVisitAdmit,
	"remove": auth.ActVisitRemove,
	"end":    auth.ActVisitEnd,
	"leave":  auth.ActNone,
	// The client's liveness check: anyone who has said hello.
	"ping": auth.ActNone,
	// The selected candidate pair: the same action as signal (admitted participants).
	"connection": auth.ActVisitSignal,
	// The size at which a video is shown (SFU layer choice) and chat through the server:
	// admitted participants, like signal.
	"video_size": auth.ActVisitSignal,
	"chat":       auth.ActVisitSignal,
	// A participant's own video paused for want of bandwidth, told to the others.
	"video_paused": auth.ActVisitSignal,
	// Keys for end-to-end encryption (public keys, wrapped frame keys), relayed like a
	// signal between admitted participants; observers too, who receive.
	"e2ee": auth.ActVisitSignal,
}

// Visits is what the signalling server needs of the visit service.
type Visits interface {
	Get(ctx context.Context, id string) (store.Visit, error)
	Connect(ctx context.Context, id visit.Identity, visitID, session string, canAdmit bool, conn visit.Member) (*visit.Presence, visit.Welcome, error)
}

// ICEConfig is the ICE configuration handed to one participant.
type ICEConfig struct {
	Servers []ICEServer
	Policy  string // "all" or "relay"
	// Expires is when the credentials in Servers expire (zero: none). The client is sent
	// fresh ones (an ice_servers message) when four fifths of their life has passed.
	Expires time.Time
}

// ICERequest says whom the ICE configuration is for.
type ICERequest struct {
	Participant store.Participant
	Visit       store.Visit
	Admitted    bool // relay credentials are for admitted participants only
	Welcome     bool // the first configuration of a new connection (not a refresh)
}

// ConnectionReport is a participant's selected ICE candidate pair towards a peer, as its
// browser reported it (the connection message).
type ConnectionReport struct {
	VisitID       string
	ParticipantID string
	Role          store.Role
	PeerID        string
	Local, Remote Candidate
}

// Config configures a Server.
type Config struct {
	Visits Visits
	// ICE returns the ICE configuration of a participant: at welcome, on admission, and
	// before its credentials expire.
	ICE func(r ICERequest) ICEConfig
	// Connection, if set, is told each selected candidate pair a participant reports.
	Connection func(ctx context.Context, r ConnectionReport)
	// OriginPatterns are extra allowed Origin hosts for the upgrade; the page's own host is
	// always allowed.
	OriginPatterns []string
	Log            *slog.Logger
	// Audit records what only the signalling sees (break-glass joins, the candidate pair
	// each peer connection uses). nil = audit.Discard.
	Audit audit.Recorder
	// PingEvery, PongWait, WriteWait and KeepAliveEvery override the timing (tests); zero =
	// the defaults.
	PingEvery, PongWait, WriteWait, KeepAliveEvery time.Duration
}

// Server is the signalling endpoint behind GET /api/v1/ws.
type Server struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	closing  bool
	clients  map[*client]struct{}
	wg       sync.WaitGroup
	shutdown chan struct{}
}

// NewServer returns a Server.
func NewServer(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.Discard
	}
	if cfg.PingEvery == 0 {
		cfg.PingEvery = PingEvery
	}
	if cfg.PongWait == 0 {
		cfg.PongWait = PongWait
	}
	if cfg.WriteWait == 0 {
		cfg.WriteWait = WriteWait
	}
	if cfg.KeepAliveEvery == 0 {
		cfg.KeepAliveEvery = KeepAliveEvery
	}
	return &Server{cfg: cfg, log: cfg.Log, clients: map[*client]struct{}{}, shutdown: make(chan struct{})}
}

// Serve upgrades the request of the identified caller (the web layer has read its cookies)
// and runs the client until its connection ends.
func (s *Server) Serve(w http.ResponseWriter, r *http.Request, id visit.Identity) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"unavailable","message":"The server is restarting."}}`))
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:   []string{Subprotocol},
		OriginPatterns: s.cfg.OriginPatterns,
	})
	if err != nil {
		s.log.Info("websocket upgrade refused", "err", err)
		return
	}
	if conn.Subprotocol() != Subprotocol {
		conn.Close(websocket.StatusProtocolError, "unsupported_version")
		return
	}
	conn.SetReadLimit(HardLimit)
	c := &client{
		s:     s,
		conn:  conn,
		id:    id,
		out:   make(chan any, outboxSize),
		final: make(chan final, 1),
		log:   s.log,
	}
	s.mu.Lock()
	s.clients[c] = struct{}{}
	closing := s.closing
	s.mu.Unlock()
	if closing { // Shutdown began during the upgrade and did not see this client
		c.Bye("server_shutdown")
	}
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
	}()
	c.run(r.Context())
}

// Shutdown says goodbye to every client (bye server_shutdown, status 1001) and waits until
// their goroutines have ended or ctx is done. Calls between browsers go on without the
// server; their pages reconnect when it is back.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for c := range s.clients {
		c.Bye("server_shutdown")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Clients returns the number of connected clients (for metrics and leak tests).
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// errorCode maps an error from the visit service to a protocol error code. It is the one
// place that does; internal errors become "internal" and their text stays in the log.
func errorCode(err error) (code, message string) {
	var pe *ProtocolError
	switch {
	case errors.As(err, &pe):
		return pe.Code, pe.Message
	case errors.Is(err, visit.ErrNotFound):
		return CodeNotFound, "No such visit or participant here."
	case errors.Is(err, visit.ErrForbidden):
		return CodeForbidden, "You may not do that in this visit."
	case errors.Is(err, visit.ErrNotAdmitted):
		return CodeNotAdmitted, "You have not been admitted yet."
	case errors.Is(err, visit.ErrNotSFU):
		return CodeWrongState, "The call does not go through the server now."
	case errors.Is(err, visit.ErrWrongState):
		return CodeWrongState, "That cannot be done now."
	case errors.Is(err, visit.ErrVisitEnded):
		return CodeVisitEnded, "This visit has ended."
	case errors.Is(err, visit.ErrLinkExpired):
		return CodeLinkExpired, "This visit link has expired."
	case errors.Is(err, visit.ErrLinkRevoked):
		return CodeLinkRevoked, "This visit link has been withdrawn."
	case errors.Is(err, visit.ErrRemoved):
		return CodeRemoved, "The clinician has removed you from this visit."
	}
	return CodeInternal, "Something went wrong on the server."
}

func errorMsg(code, message, inReplyTo string) ErrorMsg {
	return ErrorMsg{Type: "error", Code: code, Message: message, InReplyTo: inReplyTo}
}

func peerInfo(p visit.Peer) PeerInfo {
	return PeerInfo{ID: p.ID, Role: string(p.Role), Name: p.Name, Session: p.Session, Polite: p.Polite, Observer: p.Observer}
}

func peerInfos(ps []visit.Peer) []PeerInfo {
	out := make([]PeerInfo, 0, len(ps))
	for _, p := range ps {
		out = append(out, peerInfo(p))
	}
	return out
}

func waitingInfos(ws []visit.Waiting) []WaitingInfo {
	out := make([]WaitingInfo, 0, len(ws))
	for _, w := range ws {
		out = append(out, WaitingInfo{ID: w.ID, Name: w.Name, Since: w.Since.UTC(), Role: string(w.Role), Observer: w.Observer})
	}
	return out
}

// encode marshals a server message. The message types cannot fail to marshal.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("signal: unencodable message: " + err.Error())
	}
	return b
}
