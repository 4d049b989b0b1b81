package signal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// Subprotocol is the WebSocket subprotocol, and so the protocol version, this server speaks.
const Subprotocol = "bedside.v1"

// Size limits (docs/protocol.md): messages over MaxMessage get an error and are dropped;
// over HardLimit the connection is closed.
const (
	MaxMessage = 64 << 10
	HardLimit  = 1 << 20
)

// Error codes of error messages.
const (
	CodeBadJSON       = "bad_json"
	CodeTooLarge      = "too_large"
	CodeUnknownType   = "unknown_type"
	CodeInvalid       = "invalid"
	CodeHelloRequired = "hello_required"
	CodeAlreadyJoined = "already_joined"
	CodeNotAdmitted   = "not_admitted"
	CodeForbidden     = "forbidden"
	CodeNotFound      = "not_found"
	CodeWrongState    = "wrong_state"
	CodeVisitEnded    = "visit_ended"
	CodeLinkExpired   = "link_expired"
	CodeLinkRevoked   = "link_revoked"
	CodeRemoved       = "removed"
	CodeRateLimited   = "rate_limited"
	CodeInternal      = "internal"
)

// Incoming is a message from a client, after decoding and validation. Only the fields of its
// Type are set.
type Incoming struct {
	Type        string
	Visit       string          // hello
	Session     string          // hello
	To          string          // signal
	Description *Description    // signal
	Candidate   json.RawMessage // signal: an RTCIceCandidateInit object, or null
	Participant string          // admit, remove
	Peer        string          // connection
	Local       *Candidate      // connection
	Remote      *Candidate      // connection
}

// Candidate is one side of a selected ICE candidate pair, as a connection message reports
// it: no address, only what kind of path it is.
type Candidate struct {
	Type          string `json:"candidate_type"`           // host, srflx, prflx, relay
	Protocol      string `json:"protocol"`                 // udp, tcp: the candidate's transport
	RelayProtocol string `json:"relay_protocol,omitempty"` // udp, tcp, tls: client to TURN server (relay only)
}

// Description is an RTCSessionDescriptionInit.
type Description struct {
	Type string `json:"type"`
	SDP  string `json:"sdp,omitempty"`
}

// ICECandidate is an RTCIceCandidateInit, checked field by field.
type ICECandidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid,omitempty"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex,omitempty"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

// ProtocolError is an error the client is told about, with its code.
type ProtocolError struct {
	Code    string
	Message string
}

func (e *ProtocolError) Error() string { return e.Code + ": " + e.Message }

func invalid(format string, args ...any) *ProtocolError {
	return &ProtocolError{CodeInvalid, fmt.Sprintf(format, args...)}
}

// clientTypes are the message types a client may send (docs/protocol.md). Decode accepts
// these and no others, and each has an entry in messagePolicy (TestEveryMessageHasPolicy).
var clientTypes = []string{"hello", "signal", "admit", "remove", "end", "leave", "connection"}

var (
	sessionRE = regexp.MustCompile(`^[A-Za-z0-9_-]{8,64}$`)
	idRE      = regexp.MustCompile(`^[a-z]{3}_[a-z0-9]{1,40}$`)
)

// Decode parses and validates one client message. Errors are *ProtocolError.
func Decode(data []byte) (Incoming, error) {
	if len(data) > MaxMessage {
		return Incoming{}, &ProtocolError{CodeTooLarge, fmt.Sprintf("Messages may be at most %d bytes.", MaxMessage)}
	}
	// Unmarshal refuses anything after the object; a Decoder's More does not see a
	// trailing '}' or ']'.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return Incoming{}, &ProtocolError{CodeBadJSON, "The message is not a JSON object."}
	}
	var typ string
	if err := json.Unmarshal(raw["type"], &typ); err != nil || typ == "" {
		return Incoming{}, &ProtocolError{CodeUnknownType, "The message has no type."}
	}
	in := Incoming{Type: typ}
	if !slices.Contains(clientTypes, typ) {
		return in, &ProtocolError{CodeUnknownType, fmt.Sprintf("Unknown message type %q.", truncate(typ, 32))}
	}
	str := func(key string, required bool, re *regexp.Regexp) (string, error) {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			if required {
				return "", invalid("%s is required.", key)
			}
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", invalid("%s must be a string.", key)
		}
		if re != nil && !re.MatchString(s) {
			return "", invalid("%s is malformed.", key)
		}
		return s, nil
	}
	allowed := map[string]bool{"type": true}
	var err error
	switch typ {
	case "hello":
		allowed["visit"], allowed["session"] = true, true
		if in.Visit, err = str("visit", false, idRE); err != nil {
			return in, err
		}
		if in.Session, err = str("session", true, sessionRE); err != nil {
			return in, err
		}
	case "signal":
		allowed["to"], allowed["description"], allowed["candidate"] = true, true, true
		if in.To, err = str("to", true, idRE); err != nil {
			return in, err
		}
		d, hasD := raw["description"]
		c, hasC := raw["candidate"]
		if hasD == hasC {
			return in, invalid("A signal carries exactly one of description and candidate.")
		}
		if hasD {
			var desc Description
			if err := strictUnmarshal(d, &desc); err != nil {
				return in, invalid("description must be {type, sdp}.")
			}
			switch desc.Type {
			case "offer", "answer":
				if desc.SDP == "" {
					return in, invalid("description.sdp is required.")
				}
			case "rollback":
			default:
				return in, invalid("description.type must be offer, answer or rollback.")
			}
			in.Description = &desc
		} else {
			if string(c) != "null" {
				var cand ICECandidate
				if err := strictUnmarshal(c, &cand); err != nil {
					return in, invalid("candidate must be an RTCIceCandidateInit object or null.")
				}
				if len(cand.Candidate) > 1024 {
					return in, invalid("candidate.candidate is too long.")
				}
				if cand.SDPMid != nil && len(*cand.SDPMid) > 64 || cand.UsernameFragment != nil && len(*cand.UsernameFragment) > 256 {
					return in, invalid("candidate fields are too long.")
				}
				c, _ = json.Marshal(cand) // re-encoded: only the known fields travel on
			}
			in.Candidate = c
		}
	case "admit", "remove":
		allowed["participant"] = true
		if in.Participant, err = str("participant", true, idRE); err != nil {
			return in, err
		}
	case "connection":
		allowed["peer"], allowed["local"], allowed["remote"] = true, true, true
		if in.Peer, err = str("peer", true, idRE); err != nil {
			return in, err
		}
		for _, side := range []struct {
			key string
			dst **Candidate
		}{{"local", &in.Local}, {"remote", &in.Remote}} {
			v, ok := raw[side.key]
			if !ok || string(v) == "null" {
				return in, invalid("%s is required.", side.key)
			}
			var cand Candidate
			if err := strictUnmarshal(v, &cand); err != nil {
				return in, invalid("%s must be {candidate_type, protocol, relay_protocol}.", side.key)
			}
			if err := cand.validate(side.key); err != nil {
				return in, err
			}
			*side.dst = &cand
		}
	case "end", "leave":
	default:
		return in, &ProtocolError{CodeUnknownType, fmt.Sprintf("Unknown message type %q.", truncate(typ, 32))}
	}
	for k := range raw {
		if !allowed[k] {
			return in, invalid("Unknown field %q in %s.", truncate(k, 32), typ)
		}
	}
	return in, nil
}

// validate checks a reported candidate: known values only, and relay_protocol (how the
// browser reaches its TURN server) only on relay candidates.
func (c Candidate) validate(side string) error {
	switch c.Type {
	case "host", "srflx", "prflx", "relay":
	default:
		return invalid("%s.candidate_type must be host, srflx, prflx or relay.", side)
	}
	switch c.Protocol {
	case "udp", "tcp":
	default:
		return invalid("%s.protocol must be udp or tcp.", side)
	}
	switch {
	case c.RelayProtocol == "":
	case c.Type != "relay":
		return invalid("%s.relay_protocol is only for relay candidates.", side)
	case c.RelayProtocol != "udp" && c.RelayProtocol != "tcp" && c.RelayProtocol != "tls":
		return invalid("%s.relay_protocol must be udp, tcp or tls.", side)
	}
	return nil
}

func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Messages from the server. Field order is the wire order (golden files pin it).

type ParticipantInfo struct {
	ID       string `json:"id"`
	Role     string `json:"role"`
	Name     string `json:"name"`
	Observer bool   `json:"observer,omitempty"` // publishes nothing (a guest link of role observer)
}

type VisitInfo struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

type PeerInfo struct {
	ID       string `json:"id"`
	Role     string `json:"role"`
	Name     string `json:"name"`
	Session  string `json:"session"`
	Polite   bool   `json:"polite"`
	Observer bool   `json:"observer,omitempty"` // publishes nothing
}

type WaitingInfo struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Since    time.Time `json:"since"`
	Role     string    `json:"role"` // patient or guest
	Observer bool      `json:"observer,omitempty"`
}

// ICEServer is an RTCIceServer.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

type WelcomeMsg struct {
	Type               string          `json:"type"`
	Participant        ParticipantInfo `json:"participant"`
	Visit              VisitInfo       `json:"visit"`
	Admitted           bool            `json:"admitted"`
	ICEServers         []ICEServer     `json:"ice_servers"`
	ICETransportPolicy string          `json:"ice_transport_policy"`
	Peers              []PeerInfo      `json:"peers"`
	Waiting            []WaitingInfo   `json:"waiting,omitzero"` // only for those who may admit
}

type AdmittedMsg struct {
	Type  string     `json:"type"`
	Peers []PeerInfo `json:"peers"`
}

type WaitingMsg struct {
	Type    string        `json:"type"`
	Waiting []WaitingInfo `json:"waiting"`
}

type PeerMsg struct {
	Type  string   `json:"type"`
	Event string   `json:"event"`
	Peer  PeerInfo `json:"peer"`
}

type SignalMsg struct {
	Type        string          `json:"type"`
	From        string          `json:"from"`
	Description *Description    `json:"description,omitempty"`
	Candidate   json.RawMessage `json:"candidate,omitempty"`
}

type ICEServersMsg struct {
	Type               string      `json:"type"`
	ICEServers         []ICEServer `json:"ice_servers"`
	ICETransportPolicy string      `json:"ice_transport_policy"`
}

type EndedMsg struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
}

type ByeMsg struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
}

type ErrorMsg struct {
	Type      string `json:"type"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	InReplyTo string `json:"in_reply_to,omitempty"`
}
