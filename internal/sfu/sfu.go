// Package sfu is Bedside's selective forwarding unit: visits with more than two people send
// their media once to the server, which forwards to every other participant what suits
// their network and screen.
//
// Each participant has two peer connections with the SFU, each with a single offerer so
// that there is never glare: "pub" (the client offers its tracks, simulcast on the camera;
// the SFU answers) and "sub" (the SFU offers the other participants' tracks; the client
// answers). The SFU speaks through a Sink (the participant's signalling connection) and is
// told what to do (Join, Leave, Signal, VideoSize) by the visit service; it knows nothing
// of the store, the audit trail or the web.
//
// The media path (docs/design.md, decisions 34 and on): one reader goroutine per incoming
// track layer, which writes to idle down tracks itself; per down track a writer goroutine
// with a bounded queue, whose drop policy is written beside it, for the packets that
// arrive while a write is in progress; subscriber lists read as atomic copy-on-write snapshots, so no lock of
// the signalling side is taken per packet. Every decision about a packet (key frames, layer
// switches, picture ids, speakers) comes from RTP headers, header extensions, the VP8
// payload descriptor and the first bytes of the VP8 frame header (vp8.go), so end-to-end
// encrypted frames forward the same.
package sfu

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/webrtc/v4"

	"github.com/bedside/bedside/internal/rawudp"
)

// PC names one of a participant's two peer connections with the SFU.
type PC string

const (
	Pub PC = "pub" // the client publishes: it offers, the SFU answers
	Sub PC = "sub" // the client subscribes: the SFU offers, the client answers
)

// Source is what a published track carries.
type Source string

const (
	SourceAudio  Source = "audio"  // the microphone
	SourceCamera Source = "camera" // the camera, in up to three simulcast layers
	SourceScreen Source = "screen" // a shared screen, its own track
)

// Valid reports whether s is a known source.
func (s Source) Valid() bool { return s == SourceAudio || s == SourceCamera || s == SourceScreen }

// Track is one forwarded track as a subscriber learns of it (the tracks message): the mid
// of its transceiver in the subscriber's sub connection, and whose and what it is.
type Track struct {
	Mid         string
	Participant string
	Source      Source
	Kind        string // audio or video
}

// Sink is how the SFU talks to one participant: its signalling connection. The SFU calls
// it from its own goroutines; every method must queue and return at once.
type Sink interface {
	// Description sends an answer (pub) or an offer (sub).
	Description(pc PC, typ, sdp string)
	// Candidate sends a local ICE candidate (an RTCIceCandidateInit as JSON), or nil at
	// the end of candidates.
	Candidate(pc PC, candidate []byte)
	// Tracks lists every track of the sub connection; it is sent before each sub offer.
	Tracks(tracks []Track)
	// Layers tells a publisher which simulcast layers (rids) of a source anybody receives;
	// the others should be paused (dynacast).
	Layers(source Source, active []string)
	// Speakers names the active speaker ("" for nobody) and everyone speaking now.
	Speakers(active string, speaking []string)
	// VideoPaused says that a video this participant receives (publisher's source) is
	// paused because its link has too little bandwidth for it (paused), or flows again.
	VideoPaused(publisher string, source Source, paused bool)
}

// Description is a session description from a client.
type Description struct {
	Type string // offer or answer
	SDP  string
}

// Member is a participant as the visit service hands it to the SFU.
type Member struct {
	ID       string
	Session  string // the client's page-load session: a new one means a reloaded page
	Observer bool   // publishes nothing: a pub offer is refused
	Sink     Sink
}

// Errors of Signal.
var (
	ErrNotJoined = errors.New("not in the SFU")
	ErrObserver  = errors.New("observers publish nothing")
	ErrInvalid   = errors.New("invalid signal for the SFU")
)

// Config configures an SFU.
type Config struct {
	// UDP is the one socket every SFU peer connection uses (an ICE UDP mux). Required.
	UDP net.PacketConn
	// Addresses are the host candidates announced: when UDP is bound to a specific address,
	// that address; otherwise the local interface addresses found by New (on the calling
	// thread, which matters inside a network namespace). Optional.
	Addresses []netip.Addr
	// PublicIPs replace the host candidates' addresses (a server behind 1:1 NAT).
	PublicIPs []string
	// IncludeLoopback announces loopback addresses too (tests on one machine).
	IncludeLoopback bool
	// InitialBitrate is the bandwidth estimate a subscriber starts with, in bit/s
	// (default 1.5 Mbit/s): high enough for the top layer, lowered at the first sign of
	// congestion.
	InitialBitrate int
	Log            *slog.Logger
	Metrics        *Metrics
}

// SFU holds the rooms (one per visit in SFU mode) and the pion settings they share.
type SFU struct {
	cfg  Config
	log  *slog.Logger
	mux  *udpMux
	rxc  *rxConn        // the socket as the mux reads it; nil: no direct receive path
	sock *rawudp.Socket // the socket as the direct send path writes it; nil: none
	m    *Metrics

	mu     sync.Mutex
	rooms  map[string]*room
	closed bool
	wg     sync.WaitGroup // rooms' goroutines
}

// New returns an SFU serving on cfg.UDP.
func New(cfg Config) (*SFU, error) {
	if cfg.UDP == nil {
		return nil, errors.New("sfu: no UDP socket")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.InitialBitrate <= 0 {
		cfg.InitialBitrate = defaultInitialBitrate
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	addrs := cfg.Addresses
	if len(addrs) == 0 {
		var err error
		if addrs, err = ListenAddresses(cfg.UDP, cfg.IncludeLoopback); err != nil {
			return nil, err
		}
	}
	s := &SFU{cfg: cfg, log: cfg.Log, m: cfg.Metrics, rooms: map[string]*room{}}
	var muxConn net.PacketConn = cfg.UDP
	if udp, ok := cfg.UDP.(*net.UDPConn); ok {
		rxc, err := newRxConn(udp) // the direct receive path (directrx.go)
		if err != nil {
			return nil, fmt.Errorf("sfu: %w", err)
		}
		s.rxc, muxConn = rxc, rxc
		if s.sock, err = rawudp.NewSocket(udp); err != nil { // the direct send path's
			return nil, fmt.Errorf("sfu: %w", err)
		}
	}
	s.mux = newUDPMux(muxConn, addrs, pionLogger(cfg.Log))
	return s, nil
}

// ListenAddresses returns the addresses an SFU on conn announces: conn's own address, or
// when it is bound to all addresses, those of the up interfaces (IPv4 and global IPv6;
// loopback only if asked). It reads the interfaces of the calling thread's network
// namespace.
func ListenAddresses(conn net.PacketConn, loopback bool) ([]netip.Addr, error) {
	ua, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("sfu: %T is not a UDP socket", conn.LocalAddr())
	}
	if a, ok := netip.AddrFromSlice(ua.IP); ok && !a.Unmap().IsUnspecified() {
		return []netip.Addr{a.Unmap()}, nil
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("sfu: interfaces: %w", err)
	}
	v4only := ua.IP.To4() != nil
	var out []netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			switch {
			case ip.IsLoopback() && !loopback,
				ip.IsLinkLocalUnicast(), ip.IsMulticast(),
				ip.Is6() && v4only:
				continue
			}
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("sfu: no usable interface address to announce")
	}
	return out, nil
}

// Port is the UDP port every SFU connection uses.
func (s *SFU) Port() int { return s.cfg.UDP.LocalAddr().(*net.UDPAddr).Port }

// Addresses are the addresses (with the port) the SFU announces as host candidates: the
// relay must allow them as peers for clients that reach the SFU through TURN.
func (s *SFU) Addresses() []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range s.mux.addrs {
		out = append(out, netip.AddrPortFrom(a, uint16(s.Port())))
	}
	for _, ip := range s.cfg.PublicIPs {
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(s.Port())))
		}
	}
	return out
}

// settingEngine is what every SFU peer connection shares: the UDP mux, no mDNS, UDP only.
func (s *SFU) settingEngine() webrtc.SettingEngine {
	se := webrtc.SettingEngine{}
	se.SetICEUDPMux(s.mux)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	se.SetIncludeLoopbackCandidate(true) // the mux's address list decides what is announced
	if len(s.cfg.PublicIPs) > 0 {
		se.SetNAT1To1IPs(s.cfg.PublicIPs, webrtc.ICECandidateTypeHost)
	}
	se.LoggerFactory = pionLogger(s.log)
	return se
}

// Join puts a participant of a visit into the SFU, or hands a reconnected participant's
// new signalling connection to its existing state. It returns the SFU session: it changes
// whenever the participant's SFU connections are new, so that a client keeps its
// connections only while the session it had is still the one announced.
func (s *SFU) Join(visitID string, m Member) (session string) {
	r := s.room(visitID, true)
	if r == nil {
		return ""
	}
	return r.join(m)
}

// Leave takes a participant out of the SFU (it left, was removed, or the visit ended):
// its connections close and the others stop receiving it.
func (s *SFU) Leave(visitID, participantID string) {
	if r := s.room(visitID, false); r != nil {
		r.leave(participantID)
	}
}

// Disconnected says a participant's signalling connection was lost. Its media goes on
// while its connections live; they are closed if it is not back within a minute.
func (s *SFU) Disconnected(visitID, participantID string) {
	if r := s.room(visitID, false); r != nil {
		r.disconnected(participantID)
	}
}

// Signal hands the SFU a description or an ICE candidate (RTCIceCandidateInit JSON, or
// "null") from a participant, for its pub or sub connection. sources names the source of
// each of the client's sending transceivers by mid (pub offers only). It returns at once;
// the participant's own goroutine applies it.
func (s *SFU) Signal(visitID, participantID string, pc PC, d *Description, candidate []byte, sources map[string]Source) error {
	r := s.room(visitID, false)
	if r == nil {
		return ErrNotJoined
	}
	p := r.get(participantID)
	if p == nil {
		return ErrNotJoined
	}
	if pc != Pub && pc != Sub {
		return ErrInvalid
	}
	if pc == Pub && p.observer {
		return ErrObserver
	}
	if d != nil {
		switch {
		case pc == Pub && d.Type == "offer", pc == Sub && d.Type == "answer":
		default:
			return ErrInvalid // one offerer per connection: no glare, no rollback
		}
	}
	p.mail.put(evSignal{pc: pc, desc: d, candidate: candidate, sources: sources})
	return nil
}

// VideoSize says at what size a subscriber shows a publisher's video (0x0: not shown).
func (s *SFU) VideoSize(visitID, subscriberID, publisherID string, source Source, width, height int) {
	if r := s.room(visitID, false); r != nil {
		if p := r.get(subscriberID); p != nil {
			p.mail.put(evVideoSize{publisher: publisherID, source: source, w: width, h: height})
		}
	}
}

// CloseRoom ends a visit's room: every participant's connections close.
func (s *SFU) CloseRoom(visitID string) {
	if r := s.room(visitID, false); r != nil {
		r.close()
	}
}

// Close closes every room and waits for their goroutines.
func (s *SFU) Close() error {
	s.mu.Lock()
	s.closed = true
	rooms := make([]*room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	for _, r := range rooms {
		r.close()
	}
	s.wg.Wait()
	return s.mux.Close()
}

// Counts reports the live rooms and participants (metrics and leak tests).
func (s *SFU) Counts() (rooms, participants int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rooms {
		r.mu.Lock()
		participants += len(r.participants)
		r.mu.Unlock()
	}
	return len(s.rooms), participants
}

// room returns the room of a visit, making it when create is set.
func (s *SFU) room(visitID string, create bool) *room {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[visitID]
	if r == nil && create && !s.closed {
		r = newRoom(s, visitID)
		s.rooms[visitID] = r
	}
	return r
}

// dropRoom forgets a room that has closed.
func (s *SFU) dropRoom(r *room) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rooms[r.id] == r {
		delete(s.rooms, r.id)
	}
}

func newSession() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "f_" + base64.RawURLEncoding.EncodeToString(b)
}

// udpMux is pion's ICE UDP mux on the SFU's socket, announcing a fixed list of addresses
// (found when the SFU was made: pion would look at the interfaces of whatever thread
// gathers, which in a network namespace is the wrong one).
type udpMux struct {
	*ice.UDPMuxDefault
	addrs []netip.Addr
	port  int
}

func newUDPMux(conn net.PacketConn, addrs []netip.Addr, lf logging.LoggerFactory) *udpMux {
	return &udpMux{
		UDPMuxDefault: ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn, Logger: lf.NewLogger("sfu-mux")}),
		addrs:         addrs,
		port:          conn.LocalAddr().(*net.UDPAddr).Port,
	}
}

func (m *udpMux) GetListenAddresses() []net.Addr {
	out := make([]net.Addr, len(m.addrs))
	for i, a := range m.addrs {
		out[i] = &net.UDPAddr{IP: a.AsSlice(), Port: m.port}
	}
	return out
}
