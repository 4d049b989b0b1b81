package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/config"
	"github.com/bedside/bedside/internal/signal"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/turn"
	"github.com/bedside/bedside/internal/web"
)

// startTURN starts the relay the configuration asks for: embedded (STUN and TURN here),
// external (credentials for a coturn with use-auth-secret), or off (STUN only, or nothing
// when stun-addr is off).
// sfuAddrs are the embedded SFU's addresses: the relay lets clients reach exactly them.
func startTURN(cfg config.Config, log *slog.Logger, reg prometheus.Registerer, rec audit.Recorder, sockets func(func()), sfuAddrs []netip.AddrPort) (*turn.Server, error) {
	if cfg.STUNAddr == "off" && cfg.TURN != "external" {
		return turn.Off(), nil
	}
	secrets, err := cfg.TURNSecrets()
	if err != nil {
		return nil, err
	}
	if secrets == nil {
		// No secret configured: a random one for this process. Credentials then die with
		// it, which is fine for one node; a cluster shares a secret file.
		b := make([]byte, 32)
		rand.Read(b)
		secrets = [][]byte{[]byte(base64.RawStdEncoding.EncodeToString(b))}
	}
	lo, hi, _ := cfg.TURNPortRange()
	allow, _ := cfg.TURNAllowList()
	tc := turn.Config{
		ICEHost: cfg.ICEHost, Secrets: secrets,
		TTL: cfg.TURNTTL, CheckTTL: cfg.TURNCheckTTL, TTLMax: cfg.TURNTTLMax,
		Recorder: rec, Metrics: turn.NewMetrics(reg), Log: log, Sockets: sockets,
	}
	switch cfg.TURN {
	case "external":
		tc.External = cfg.TURNURLList()
		return turn.Start(tc)
	case "off":
		tc.Addr, tc.STUNOnly = cfg.STUNAddr, true
		return turn.Start(tc)
	}
	tc.Addr, tc.TCP, tc.UDPListeners = cfg.STUNAddr, cfg.TURNTCP, cfg.TURNUDPSockets
	tc.MinPort, tc.MaxPort = lo, hi
	tc.AllowPeers, tc.TCPRelay = allow, cfg.TURNTCPRelay
	tc.AllowPeerAddrs = sfuAddrs
	tc.QuotaPerUser, tc.QuotaTotal, tc.BandwidthKbps = cfg.TURNQuota, cfg.TURNQuotaTotal, cfg.TURNBandwidthKbps
	tc.RelayIP, tc.PublicIP = net.ParseIP(cfg.TURNRelayIP), net.ParseIP(cfg.TURNPublicIP)
	if cfg.TURNTLSAddr != "" {
		certFile, keyFile := cfg.TURNTLSFiles()
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("turn-tls-cert/turn-tls-key: %w", err)
		}
		tc.TLSAddr = cfg.TURNTLSAddr
		tc.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	return turn.Start(tc)
}

// iceConfig is the ICE configuration each participant gets (docs/protocol.md): STUN while
// waiting, relay credentials once admitted, relay-only ICE in a privacy visit.
func (s *Service) iceConfig(r signal.ICERequest) signal.ICEConfig {
	if r.Welcome {
		s.turn.Readmit(r.Participant.ID) // back in (a patient who left and came back)
	}
	purpose := turn.NoRelay
	if r.Admitted {
		purpose = turn.ForCall
	}
	servers, exp := s.turn.ICEServers(r.Participant.ID, purpose)
	return signal.ICEConfig{Servers: signalServers(servers), Policy: icePolicy(r.Visit), Expires: exp}
}

// checkICE is the device check's configuration: a short-lived credential for the visit.
func (s *Service) checkICE(v store.Visit) web.ICEConfig {
	servers, exp := s.turn.ICEServers(v.ID, turn.ForCheck)
	out := web.ICEConfig{Policy: icePolicy(v), Expires: exp, Servers: []web.ICEServer{}}
	for _, is := range servers {
		out.Servers = append(out.Servers, web.ICEServer{URLs: is.URLs, Username: is.Username, Credential: is.Credential})
	}
	return out
}

func icePolicy(v store.Visit) string {
	if v.Privacy {
		return "relay"
	}
	return "all"
}

func signalServers(in []turn.ICEServer) []signal.ICEServer {
	out := make([]signal.ICEServer, 0, len(in))
	for _, is := range in {
		out = append(out, signal.ICEServer{URLs: is.URLs, Username: is.Username, Credential: is.Credential})
	}
	return out
}

// restoreRevocations refuses again, after a restart, the relay credentials of those who
// departed within turn-ttl-max (the longest credential the relay accepts): with a
// configured secret their credentials outlive the process (decision 26).
func (s *Service) restoreRevocations(ctx context.Context, cfg config.Config) error {
	if !s.turn.Enabled() {
		return nil
	}
	ps, vs, err := s.store.RecentDepartures(ctx, s.now().Add(-cfg.TURNTTLMax))
	if err != nil {
		return fmt.Errorf("relay revocations: %w", err)
	}
	s.turn.RestoreRevoked(append(ps, vs...))
	if len(ps)+len(vs) > 0 {
		s.log.Info("relay revocations restored", "participants", len(ps), "visits", len(vs))
	}
	return nil
}

// departed closes the relays of a participant who is out of the visit for good (and, when
// the visit ends or its link is revoked, of its device checks).
func (s *Service) departed(visitID, participantID, reason string) {
	if s.turn == nil {
		return
	}
	s.turn.Revoke(participantID, reason)
	if reason == "ended" || reason == "revoked" {
		s.turn.Revoke(visitID, reason)
	}
}

// connection keeps a reported candidate pair with the visit, counts it, audits it and logs
// whether the call needed the relay, and why.
func (s *Service) connection(ctx context.Context, r signal.ConnectionReport) {
	c := store.Connection{
		VisitID: r.VisitID, ParticipantID: r.ParticipantID, PeerID: r.PeerID,
		Local:     store.Candidate{Type: r.Local.Type, Protocol: r.Local.Protocol, RelayProtocol: r.Local.RelayProtocol},
		Remote:    store.Candidate{Type: r.Remote.Type, Protocol: r.Remote.Protocol, RelayProtocol: r.Remote.RelayProtocol},
		UpdatedAt: time.Now().UTC(),
	}
	if err := s.visits.RecordConnection(ctx, c); err != nil {
		s.log.Warn("cannot store the selected candidate pair", "visit", r.VisitID, "participant", r.ParticipantID, "err", err)
	}
	relayProto := r.Local.RelayProtocol
	s.metrics.connections.WithLabelValues(r.Local.Type, r.Local.Protocol, relayProto).Inc()
	kind := "direct"
	if c.Relayed() {
		kind = "relayed"
	}
	attrs := []any{"visit", r.VisitID, "participant", r.ParticipantID, "peer", r.PeerID, "path", kind,
		"local", r.Local.Type, "remote", r.Remote.Type, "protocol", r.Local.Protocol}
	switch {
	case !c.Relayed():
		s.log.Info("call connected directly", attrs...)
	case r.Local.Type == "relay" && r.Remote.Type == "relay":
		s.log.Info("relay selected: relay-only on both sides (privacy mode or no direct path for either)", append(attrs, "relay_protocol", relayProto)...)
	case r.Local.Type == "relay" && relayProto != "udp":
		s.log.Info("relay selected: no direct path, and UDP to the relay blocked (TURN over "+relayProto+")", append(attrs, "relay_protocol", relayProto)...)
	default:
		s.log.Info("relay selected: no direct path", append(attrs, "relay_protocol", relayProto)...)
	}
	// The audit trail gets the pair from the signalling layer (once per change, with the
	// connection's address and user agent).
}

// appMetrics are the metrics app owns (the relay registers its own).
type appMetrics struct {
	connections *prometheus.CounterVec
}

func newAppMetrics(reg prometheus.Registerer) *appMetrics {
	m := &appMetrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bedside_call_connections_total",
			Help: "Selected ICE candidate pairs reported by participants, by local candidate type, protocol and relay protocol.",
		}, []string{"candidate_type", "protocol", "relay_protocol"}),
	}
	reg.MustRegister(m.connections)
	return m
}

// turnAudit names the visit in the relay's audit events: the relay knows a credential's
// participant (the actor), the store knows that participant's visit, so that a visit's
// trail shows when its people used the relay. A name the store does not know (the device
// check's credential, a forged username) leaves the visit empty.
type turnAudit struct {
	rec audit.Recorder
	st  interface {
		ParticipantByID(ctx context.Context, id string) (store.Participant, error)
	}
}

func (a turnAudit) Record(ctx context.Context, e audit.Event) error {
	if e.VisitID == "" && e.ActorRole == "participant" && e.ActorID != "" {
		if p, err := a.st.ParticipantByID(ctx, e.ActorID); err == nil {
			e.VisitID = p.VisitID
		}
	}
	return a.rec.Record(ctx, e)
}
