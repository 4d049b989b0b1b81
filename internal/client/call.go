package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
)

// PeerInfo is a peer entry of the protocol.
type PeerInfo struct {
	ID       string `json:"id"`
	Role     string `json:"role"`
	Name     string `json:"name"`
	Session  string `json:"session"`
	Polite   bool   `json:"polite"`
	Observer bool   `json:"observer"`
}

// Welcome is the server's welcome message.
type Welcome struct {
	Participant struct {
		ID       string `json:"id"`
		Role     string `json:"role"`
		Name     string `json:"name"`
		Observer bool   `json:"observer"`
	} `json:"participant"`
	Visit struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"visit"`
	Admitted           bool        `json:"admitted"`
	ICEServers         []ICEServer `json:"ice_servers"`
	ICETransportPolicy string      `json:"ice_transport_policy"`
	Peers              []PeerInfo  `json:"peers"`
	Waiting            []Waiting   `json:"waiting"`
	Mode               string      `json:"mode"`
	SFUSession         string      `json:"sfu_session"`
}

// NewSession returns a random page-load session id.
func NewSession() string {
	b := make([]byte, 16)
	rand.Read(b)
	return "s_" + base64.RawURLEncoding.EncodeToString(b)
}

// Call is a participant in a visit, doing what the browser's call.js does: it joins with
// hello, follows the peer events, runs one Peer per other participant (peer to peer) or its
// two connections with the SFU (SFU mode, make before break: a peer connection closes once
// that peer arrives through the SFU), and forwards every message that is not a signal to
// Events.
type Call struct {
	Conn    *Conn
	Welcome Welcome
	Session string
	// Events receives every message other than signal, in order (buffered; a test that
	// does not read it only loses events, never blocks the call).
	Events chan Message
	// Err is the last error making a peer connection or handling a peer's signal (read
	// after Run returns).
	Err error
	// Layers are the camera's simulcast layers in SFU mode (set before Run; default
	// DefaultLayers; one layer without a rid sends no simulcast).
	Layers []LayerSpec
	// OnPacket, if set before Run, is called for every RTP packet received through the SFU
	// (from its reader goroutines: keep it quick).
	OnPacket func(Packet)
	// REMBOnly, if set before Run, makes the sub connection offer the server no
	// transport-wide congestion control: the server then knows this receiver's bandwidth
	// only by the REMB it sends (SFUConn.SendREMB), as with a client that offers no more.
	REMBOnly bool

	media bool
	ice   []ICEServer
	pol   string

	mu       sync.Mutex
	peers    map[string]*Peer
	sessions map[string]string // peer id -> the session its Peer was made for
	sendCtx  context.Context
	wg       sync.WaitGroup // media senders
	mode     string
	sfu      *SFUConn
	arrived  chan string // publishers whose media arrived through the SFU
}

// Join sends hello on conn (visit may be "" for link holders) and waits for the welcome.
// media: send synthetic audio and video to every peer.
func Join(ctx context.Context, conn *Conn, visit string, media bool) (*Call, error) {
	c := &Call{Conn: conn, Session: NewSession(), Events: make(chan Message, 256), media: media, peers: map[string]*Peer{}, sessions: map[string]string{},
		mode: "p2p", arrived: make(chan string, 64)}
	hello := map[string]string{"type": "hello", "session": c.Session}
	if visit != "" {
		hello["visit"] = visit
	}
	if err := conn.Send(ctx, hello); err != nil {
		return nil, err
	}
	m, err := conn.Next(ctx, "welcome", "error")
	if err != nil {
		return nil, err
	}
	if m.Type == "error" {
		var e struct{ Code, Message string }
		m.Decode(&e)
		return nil, fmt.Errorf("hello refused: %s: %s", e.Code, e.Message)
	}
	if err := m.Decode(&c.Welcome); err != nil {
		return nil, err
	}
	c.ice, c.pol = c.Welcome.ICEServers, c.Welcome.ICETransportPolicy
	return c, nil
}

// Run handles messages until the connection closes or ctx ends, then closes every peer.
func (c *Call) Run(ctx context.Context) error {
	c.mu.Lock()
	c.sendCtx = ctx
	c.mu.Unlock()
	defer c.closePeers()
	if c.Welcome.Admitted && c.Welcome.Mode == "sfu" {
		c.enterSFU(ctx, c.Welcome.SFUSession)
	}
	for _, p := range c.Welcome.Peers {
		c.learn(p)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case id := <-c.arrived:
			// Make before break: this peer's media comes through the SFU now.
			c.dropPeer(id)
		case m, ok := <-c.Conn.In:
			if !ok {
				return nil
			}
			if err := c.handle(ctx, m); err != nil {
				return err
			}
		}
	}
}

// enterSFU opens the connections with the SFU for an SFU session (again when the server
// announces a new one: the old connections are gone with the old session).
func (c *Call) enterSFU(ctx context.Context, session string) {
	c.mu.Lock()
	old := c.sfu
	if old != nil && old.Session == session {
		c.mu.Unlock()
		return
	}
	c.mode = "sfu"
	ice, pol := c.ice, c.pol
	layers := c.Layers
	if len(layers) == 0 {
		layers = DefaultLayers()
	}
	s := newSFUConn(session, func(v any) error { return c.Conn.Send(context.Background(), v) }, ice, pol, c.REMBOnly,
		func(id string) {
			select {
			case c.arrived <- id:
			default:
			}
		}, c.OnPacket)
	c.sfu = s
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	if c.media && !c.Welcome.Participant.Observer {
		if err := s.publish(layers); err != nil {
			c.Err = fmt.Errorf("publish to the SFU: %w", err)
			return
		}
		c.wg.Add(1)
		go func() { defer c.wg.Done(); s.sendMedia(ctx) }() // ends with ctx or the connection
	}
}

// SFU returns the connections with the SFU, or nil (peer to peer).
func (c *Call) SFU() *SFUConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sfu
}

// Mode is how the call carries media now: p2p or sfu.
func (c *Call) Mode() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mode
}

// SetVideoSize tells the server at what size this participant shows a publisher's video
// (0x0: hidden), as the browser does for each remote video.
func (c *Call) SetVideoSize(ctx context.Context, participant, source string, width, height int) error {
	return c.Conn.Send(ctx, map[string]any{"type": "video_size", "participant": participant, "source": source, "width": width, "height": height})
}

func (c *Call) handle(ctx context.Context, m Message) error {
	switch m.Type {
	case "signal":
		var s SignalIn
		if err := m.Decode(&s); err != nil {
			return err
		}
		if s.From == "sfu" {
			if sfu := c.SFU(); sfu != nil {
				if err := sfu.handle(s); err != nil {
					c.Err = err
				}
			}
			return nil
		}
		c.mu.Lock()
		p := c.peers[s.From]
		c.mu.Unlock()
		if p == nil {
			// The polite side makes its connection on the first signal.
			var err error
			if p, err = c.newPeer(PeerInfo{ID: s.From, Polite: true}); err != nil {
				return err
			}
		}
		if err := p.HandleSignal(s); err != nil {
			// Not the end of the call: a signal can race the peer connection's end (the
			// other side closing it at shutdown while its last offer is on the way), and
			// the messages after it (a bye) must still be read.
			c.Err = fmt.Errorf("signal from %s: %w", s.From, err)
		}
		return nil
	case "admitted":
		var a struct {
			Peers      []PeerInfo
			Mode       string
			SFUSession string `json:"sfu_session"`
		}
		m.Decode(&a)
		if a.Mode == "sfu" {
			c.enterSFU(ctx, a.SFUSession)
		}
		for _, p := range a.Peers {
			c.learn(p)
		}
	case "mode":
		var md struct {
			Mode       string
			SFUSession string `json:"sfu_session"`
		}
		m.Decode(&md)
		if md.Mode == "sfu" {
			c.enterSFU(ctx, md.SFUSession)
		}
	case "tracks":
		var t struct{ Tracks []TrackInfo }
		m.Decode(&t)
		if sfu := c.SFU(); sfu != nil {
			sfu.setTracks(t.Tracks)
		}
	case "layers":
		var l struct {
			Source string
			Active []string
		}
		m.Decode(&l)
		if sfu := c.SFU(); sfu != nil {
			sfu.setLayers(l.Source, l.Active)
		}
	case "peer":
		var e struct {
			Event string
			Peer  PeerInfo
		}
		m.Decode(&e)
		switch e.Event {
		case "joined":
			c.learn(e.Peer)
		case "left":
			c.dropPeer(e.Peer.ID)
		}
	case "ice_servers":
		var s struct {
			ICEServers         []ICEServer `json:"ice_servers"`
			ICETransportPolicy string      `json:"ice_transport_policy"`
		}
		m.Decode(&s)
		c.mu.Lock()
		c.ice, c.pol = s.ICEServers, s.ICETransportPolicy
		c.mu.Unlock()
	}
	select {
	case c.Events <- m:
	default:
	}
	return nil
}

// learn reacts to a peer the server announced: a new session replaces the old connection,
// and the impolite side makes the connection (and so the first offer).
func (c *Call) learn(info PeerInfo) {
	c.mu.Lock()
	old, had := c.peers[info.ID]
	sameSession := had && c.sessions[info.ID] == info.Session
	c.mu.Unlock()
	if sameSession {
		return
	}
	if had {
		c.dropPeer(old.ID)
	}
	if info.Polite || c.Mode() == "sfu" {
		return // the polite side waits for the peer's offer; in SFU mode nobody connects directly
	}
	if _, err := c.newPeer(info); err != nil {
		c.Err = fmt.Errorf("peer connection to %s: %w", info.ID, err)
	}
}

func (c *Call) newPeer(info PeerInfo) (*Peer, error) {
	c.mu.Lock()
	ice, pol := c.ice, c.pol
	c.mu.Unlock()
	p, err := NewPeer(PeerConfig{
		ID: info.ID, ICEServers: ice, Policy: pol, Polite: info.Polite, Media: c.media,
		Send: func(v any) error { return c.Conn.Send(context.Background(), v) },
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.peers[info.ID] = p
	c.sessions[info.ID] = info.Session
	ctx := c.sendCtx
	c.mu.Unlock()
	if c.media && ctx != nil {
		c.wg.Add(1)
		go func() { defer c.wg.Done(); p.waitTracksThenSend(ctx) }()
	}
	return p, nil
}

func (c *Call) dropPeer(id string) {
	c.mu.Lock()
	p := c.peers[id]
	delete(c.peers, id)
	delete(c.sessions, id)
	c.mu.Unlock()
	if p != nil {
		p.Close()
	}
}

func (c *Call) closePeers() {
	c.mu.Lock()
	ps := c.peers
	c.peers = map[string]*Peer{}
	s := c.sfu
	c.mu.Unlock()
	for _, p := range ps {
		p.Close()
	}
	if s != nil {
		s.Close()
	}
	c.wg.Wait()
}

// Peers returns the ids of the participants this call has a peer connection with.
func (c *Call) Peers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.peers))
	for id := range c.peers {
		out = append(out, id)
	}
	return out
}

// Peer returns the connection to a participant, or nil.
func (c *Call) Peer(id string) *Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers[id]
}
