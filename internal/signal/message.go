package signal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
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
	Visit       string            // hello
	Session     string            // hello
	To          string            // signal: a participant id, or "sfu"
	PC          string            // signal to the SFU, connection about it: "pub" or "sub"
	Description *Description      // signal
	Candidate   json.RawMessage   // signal: an RTCIceCandidateInit object, or null
	Sources     map[string]string // signal with a description: the source of each sending mid
	SFUSession  string            // signal to the SFU: the sfu_session its connection belongs to (optional)
	Participant string            // admit, remove, video_size
	Peer        string            // connection: a participant id, or "sfu"
	Local       *Candidate        // connection
	Remote      *Candidate        // connection
	Source      string            // video_size, video_paused
	Paused      bool              // video_paused
	Width       int               // video_size
	Height      int               // video_size
	Text        string            // chat
	ChatID      string            // chat: the sender's id for the message (optional), for repeats
	Pub         string            // e2ee: the sender's public key (docs/protocol.md, "End-to-end encryption")
	KID         int64             // e2ee: the key id of Key (0: no key in this message)
	Key         string            // e2ee: the sender's frame key, wrapped for the recipient
}

// SFU is the reserved peer id of the server's SFU in signal and connection messages.
const SFU = "sfu"

// Limits of the SFU-era messages.
const (
	MaxChat       = 2000 // characters of a chat message
	maxSources    = 8    // entries of a sources map
	maxVideoPixel = 8192 // width or height of a video_size
)

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
var clientTypes = []string{"hello", "signal", "admit", "remove", "end", "leave", "connection", "video_size", "video_paused", "chat", "ping", "e2ee"}

var (
	// clientIDRE is an id a client makes: its page load's session, a chat message's id.
	clientIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{8,64}$`)
	idRE       = regexp.MustCompile(`^[a-z]{3}_[a-z0-9]{1,40}$`)
	// peerRE is a participant id or the SFU.
	peerRE = regexp.MustCompile(`^([a-z]{3}_[a-z0-9]{1,40}|sfu)$`)
	midRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	// e2eePubRE is an uncompressed P-256 public key (65 bytes) in unpadded base64url;
	// e2eeKeyRE a wrapped frame key: a 12-byte IV, the 16-byte key, a 16-byte tag.
	e2eePubRE = regexp.MustCompile(`^[A-Za-z0-9_-]{87}$`)
	e2eeKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]{59}$`)
)

// MaxE2EEKeyID is the largest key id of an e2ee message (a 32-bit SFrame KID).
const MaxE2EEKeyID = 1<<32 - 1

// sources are the track sources a client may name.
var sources = []string{"audio", "camera", "screen"}

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
	// source reads a video's source (video_size, video_paused): camera or screen.
	source := func() (string, error) {
		src, err := str("source", true, nil)
		if err == nil && src != "camera" && src != "screen" {
			err = invalid("source must be camera or screen.")
		}
		return src, err
	}
	allowed := map[string]bool{"type": true}
	var err error
	switch typ {
	case "hello":
		allowed["visit"], allowed["session"] = true, true
		if in.Visit, err = str("visit", false, idRE); err != nil {
			return in, err
		}
		if in.Session, err = str("session", true, clientIDRE); err != nil {
			return in, err
		}
	case "signal":
		allowed["to"], allowed["description"], allowed["candidate"], allowed["pc"], allowed["sources"], allowed["sfu_session"] = true, true, true, true, true, true
		if in.To, err = str("to", true, peerRE); err != nil {
			return in, err
		}
		if in.PC, err = str("pc", in.To == SFU, nil); err != nil {
			return in, err
		}
		if in.SFUSession, err = str("sfu_session", false, clientIDRE); err != nil {
			return in, err
		}
		if in.SFUSession != "" && in.To != SFU {
			return in, invalid("sfu_session is only for signals to the SFU.")
		}
		switch {
		case in.To == SFU && in.PC != "pub" && in.PC != "sub":
			return in, invalid("pc must be pub or sub.")
		case in.To != SFU && in.PC != "":
			return in, invalid("pc is only for signals to the SFU.")
		}
		if v, ok := raw["sources"]; ok && string(v) != "null" {
			if err := strictUnmarshal(v, &in.Sources); err != nil || len(in.Sources) > maxSources {
				return in, invalid("sources must be an object of at most %d mids to audio, camera or screen.", maxSources)
			}
			for mid, src := range in.Sources {
				if !midRE.MatchString(mid) || !slices.Contains(sources, src) {
					return in, invalid("sources must map mids to audio, camera or screen.")
				}
			}
			if _, hasD := raw["description"]; !hasD {
				return in, invalid("sources go with a description.")
			}
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
		allowed["peer"], allowed["local"], allowed["remote"], allowed["pc"] = true, true, true, true
		if in.Peer, err = str("peer", true, peerRE); err != nil {
			return in, err
		}
		if in.PC, err = str("pc", in.Peer == SFU, nil); err != nil {
			return in, err
		}
		switch {
		case in.Peer == SFU && in.PC != "pub" && in.PC != "sub":
			return in, invalid("pc must be pub or sub.")
		case in.Peer != SFU && in.PC != "":
			return in, invalid("pc is only for the SFU's connections.")
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
	case "video_size":
		allowed["participant"], allowed["source"], allowed["width"], allowed["height"] = true, true, true, true
		if in.Participant, err = str("participant", true, idRE); err != nil {
			return in, err
		}
		if in.Source, err = source(); err != nil {
			return in, err
		}
		for _, f := range []struct {
			key string
			dst *int
		}{{"width", &in.Width}, {"height", &in.Height}} {
			if err := json.Unmarshal(raw[f.key], f.dst); err != nil || *f.dst < 0 || *f.dst > maxVideoPixel {
				return in, invalid("%s must be a whole number from 0 to %d.", f.key, maxVideoPixel)
			}
		}
		if (in.Width == 0) != (in.Height == 0) {
			return in, invalid("width and height are both 0 (hidden) or neither.")
		}
	case "video_paused":
		// The sender paused (or resumed) its own video for want of bandwidth on its link.
		allowed["source"], allowed["paused"] = true, true
		if in.Source, err = source(); err != nil {
			return in, err
		}
		switch string(raw["paused"]) {
		case "true":
			in.Paused = true
		case "false":
		default:
			return in, invalid("paused must be true or false.")
		}
	case "chat":
		allowed["text"], allowed["id"] = true, true
		if in.Text, err = str("text", true, nil); err != nil {
			return in, err
		}
		if in.ChatID, err = str("id", false, clientIDRE); err != nil {
			return in, err
		}
		if strings.TrimSpace(in.Text) == "" || utf8.RuneCountInString(in.Text) > MaxChat || !utf8.ValidString(in.Text) {
			return in, invalid("text must be 1 to %d characters.", MaxChat)
		}
	case "e2ee":
		// Keys for end-to-end encryption, relayed to one participant: the server sees
		// public keys and wrapped frame keys, never a key it could use.
		allowed["to"], allowed["pub"], allowed["kid"], allowed["key"] = true, true, true, true
		if in.To, err = str("to", true, idRE); err != nil {
			return in, err
		}
		if in.Pub, err = str("pub", true, e2eePubRE); err != nil {
			return in, err
		}
		if in.Key, err = str("key", false, e2eeKeyRE); err != nil {
			return in, err
		}
		if v, ok := raw["kid"]; ok && string(v) != "null" {
			if err := json.Unmarshal(v, &in.KID); err != nil || in.KID < 1 || in.KID > MaxE2EEKeyID {
				return in, invalid("kid must be a whole number from 1 to %d.", int64(MaxE2EEKeyID))
			}
		}
		if (in.KID == 0) != (in.Key == "") {
			return in, invalid("kid and key go together.")
		}
	case "end", "leave", "ping":
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
	Waiting            []WaitingInfo   `json:"waiting,omitzero"`      // only for those who may admit
	Mode               string          `json:"mode"`                  // p2p or sfu
	SFUSession         string          `json:"sfu_session,omitempty"` // sfu mode only
}

type AdmittedMsg struct {
	Type       string     `json:"type"`
	Peers      []PeerInfo `json:"peers"`
	Mode       string     `json:"mode"`
	SFUSession string     `json:"sfu_session,omitempty"`
}

// ModeMsg: the call moved to the SFU.
type ModeMsg struct {
	Type       string `json:"type"`
	Mode       string `json:"mode"`
	SFUSession string `json:"sfu_session,omitempty"`
}

// TrackInfo is one track of a participant's sub connection.
type TrackInfo struct {
	Mid         string `json:"mid"`
	Participant string `json:"participant"`
	Source      string `json:"source"`
	Kind        string `json:"kind"`
}

type TracksMsg struct {
	Type   string      `json:"type"`
	Tracks []TrackInfo `json:"tracks"`
}

type LayersMsg struct {
	Type   string   `json:"type"`
	Source string   `json:"source"`
	Active []string `json:"active"`
}

type SpeakersMsg struct {
	Type     string   `json:"type"`
	Active   string   `json:"active"`
	Speaking []string `json:"speaking"`
}

type VideoPausedMsg struct {
	Type        string `json:"type"`
	Participant string `json:"participant"`
	Source      string `json:"source"`
	Paused      bool   `json:"paused"`
	Link        string `json:"link"` // "yours" (the SFU paused it on the receiver's link) or "theirs"
}

type ChatMsg struct {
	Type string    `json:"type"`
	From string    `json:"from"`
	Text string    `json:"text"`
	At   time.Time `json:"at"`
}

// E2EEMsg relays an e2ee message: the sender's public key and, once it has the
// recipient's, its frame key wrapped for the recipient.
type E2EEMsg struct {
	Type string `json:"type"`
	From string `json:"from"`
	Pub  string `json:"pub"`
	KID  int64  `json:"kid,omitempty"`
	Key  string `json:"key,omitempty"`
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
	Type        string            `json:"type"`
	From        string            `json:"from"`
	PC          string            `json:"pc,omitempty"` // from the SFU: pub or sub
	Description *Description      `json:"description,omitempty"`
	Candidate   json.RawMessage   `json:"candidate,omitempty"`
	Sources     map[string]string `json:"sources,omitempty"`
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

// PongMsg answers a client's ping (docs/protocol.md, Transport: liveness).
type PongMsg struct {
	Type string `json:"type"`
}

type ErrorMsg struct {
	Type      string `json:"type"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	InReplyTo string `json:"in_reply_to,omitempty"`
}
