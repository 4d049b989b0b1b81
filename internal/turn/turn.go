// Package turn is Bedside's embedded STUN (and, with the TURN issue, relay) server, on
// pion/turn. It also says which ICE servers each participant is given, so that adding relays
// changes no client: clients use exactly the list the server hands them.
package turn

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"

	pionturn "github.com/pion/turn/v5"
)

// Config configures the server.
type Config struct {
	// STUNAddr is the UDP listen address ("" or "off": no embedded server).
	STUNAddr string
	// ICEHost is the host name or address put into the URLs handed to browsers.
	ICEHost string
	Log     *slog.Logger
}

// Server is the embedded STUN/TURN server. The zero Server (from Off) serves nothing and
// hands out no ICE servers.
type Server struct {
	srv     *pionturn.Server
	port    int
	iceHost string
}

// ICEServer is one entry of RTCConfiguration.iceServers.
type ICEServer struct {
	URLs       []string
	Username   string
	Credential string
}

// Start listens on cfg.STUNAddr and answers STUN binding requests. Relay allocations are
// refused until relaying is configured.
func Start(cfg Config) (*Server, error) {
	if cfg.STUNAddr == "" || cfg.STUNAddr == "off" {
		return &Server{}, nil
	}
	pc, err := net.ListenPacket("udp", cfg.STUNAddr)
	if err != nil {
		return nil, fmt.Errorf("stun listen %s: %w", cfg.STUNAddr, err)
	}
	srv, err := pionturn.NewServer(pionturn.ServerConfig{
		Realm: "bedside",
		// No credentials exist yet: every allocation is refused with 401.
		AuthHandler:       func(*pionturn.RequestAttributes) (string, []byte, bool) { return "", nil, false },
		PacketConnConfigs: []pionturn.PacketConnConfig{{PacketConn: pc}},
	})
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("stun server: %w", err)
	}
	return &Server{srv: srv, port: pc.LocalAddr().(*net.UDPAddr).Port, iceHost: cfg.ICEHost}, nil
}

// Port is the UDP port the server listens on (0 when off).
func (s *Server) Port() int { return s.port }

// ICEServers returns the ICE servers for a participant: today the embedded STUN server.
func (s *Server) ICEServers() []ICEServer {
	if s.srv == nil {
		return []ICEServer{}
	}
	return []ICEServer{{URLs: []string{"stun:" + net.JoinHostPort(s.iceHost, strconv.Itoa(s.port))}}}
}

// Close stops the server.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Close()
}
