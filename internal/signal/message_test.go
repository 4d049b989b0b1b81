package signal

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// Fixed values the golden messages are built from.
var (
	gPatient   = visit.Peer{ID: "prt_ada2patient9x", Role: store.RolePatient, Name: "Ada", Session: "s_patient-page-1", Polite: true}
	gClinician = visit.Peer{ID: "prt_rivera3clin7k", Role: store.RoleClinician, Name: "Dr Rivera", Session: "s_clinician-page-1", Polite: true}
	gGuest     = visit.Peer{ID: "prt_grace5guest2q", Role: store.RoleGuest, Name: "Grace", Session: "s_guest-page-1", Polite: true}
	// Not UTC on purpose: waiting times go out in UTC.
	gSince = time.Date(2026, 11, 25, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	gSTUN  = []ICEServer{{URLs: []string{"stun:127.0.0.1:3478"}}}
	gTURN  = []ICEServer{
		{URLs: []string{"stun:clinic.example:3478"}},
		{URLs: []string{"turn:clinic.example:3478?transport=udp", "turns:clinic.example:5349"}, Username: "1764064800:prt_ada2patient9x", Credential: "c2VjcmV0"},
	}
)

// relayed is what the other side receives for a client's signal input: it goes through
// Decode and the client's Signal, as on the server.
func relayed(t *testing.T, input string) any {
	t.Helper()
	in, err := Decode([]byte(input))
	if err != nil {
		t.Fatalf("Decode(%s): %v", input, err)
	}
	c := &client{out: make(chan any, 1), final: make(chan final, 1)}
	c.Signal(gPatient.ID, in)
	return <-c.out
}

func goldenMessages(t *testing.T) map[string]any {
	member := func(f func(c *client)) any { // what the room makes a client send
		c := &client{out: make(chan any, 4), final: make(chan final, 1), sfuMode: true}
		f(c)
		select {
		case v := <-c.out:
			if n, ok := v.(admittedNote); ok { // ice_servers goes before it; see ice_servers
				return n.msg
			}
			return v
		case f := <-c.final:
			return f.msg
		}
	}
	return map[string]any{
		"welcome_patient_waiting": WelcomeMsg{
			Type:        "welcome",
			Participant: ParticipantInfo{ID: gPatient.ID, Role: "patient", Name: "Ada"},
			Visit:       VisitInfo{ID: "vst_3kq9xw2mfa7cbn5d", State: "waiting"},
			Admitted:    false, ICEServers: gSTUN, ICETransportPolicy: "all",
			Peers: peerInfos(nil), Mode: "p2p",
		},
		"welcome_clinician": WelcomeMsg{
			Type:        "welcome",
			Participant: ParticipantInfo{ID: gClinician.ID, Role: "clinician", Name: "Dr Rivera"},
			Visit:       VisitInfo{ID: "vst_3kq9xw2mfa7cbn5d", State: "in_call"},
			Admitted:    true, ICEServers: gTURN, ICETransportPolicy: "relay",
			Peers:   peerInfos([]visit.Peer{gPatient}),
			Waiting: waitingInfos([]visit.Waiting{{ID: "prt_guest4waiting", Name: "Grace", Since: gSince, Role: store.RoleGuest, Observer: true}}),
			Mode:    "p2p",
		},
		"welcome_sfu": WelcomeMsg{
			Type:        "welcome",
			Participant: ParticipantInfo{ID: gGuest.ID, Role: "guest", Name: "Grace", Observer: true},
			Visit:       VisitInfo{ID: "vst_3kq9xw2mfa7cbn5d", State: "in_call"},
			Admitted:    true, ICEServers: gTURN, ICETransportPolicy: "all",
			Peers: peerInfos([]visit.Peer{gClinician, gPatient}),
			Mode:  "sfu", SFUSession: "f_3kq9xw2mfa7cbn5d8x1y",
		},
		"welcome_clinician_nobody_waiting": WelcomeMsg{
			Type:        "welcome",
			Participant: ParticipantInfo{ID: gClinician.ID, Role: "clinician", Name: "Dr Rivera"},
			Visit:       VisitInfo{ID: "vst_3kq9xw2mfa7cbn5d", State: "scheduled"},
			Admitted:    true, ICEServers: []ICEServer{}, ICETransportPolicy: "all",
			Peers:   peerInfos(nil),
			Waiting: waitingInfos(nil),
			Mode:    "p2p",
		},
		"admitted": member(func(c *client) { c.Admitted([]visit.Peer{gClinician}, visit.MediaState{Mode: visit.ModeP2P}) }),
		"admitted_sfu": member(func(c *client) {
			c.Admitted([]visit.Peer{gClinician, gGuest}, visit.MediaState{Mode: visit.ModeSFU, SFUSession: "f_3kq9xw2mfa7cbn5d8x1y"})
		}),
		"mode_sfu":          member(func(c *client) { c.Mode(visit.MediaState{Mode: visit.ModeSFU, SFUSession: "f_3kq9xw2mfa7cbn5d8x1y"}) }),
		"signal_sfu_answer": member(func(c *client) { c.MediaDescription("pub", "answer", "v=0\r\n") }),
		"signal_sfu_offer":  member(func(c *client) { c.MediaDescription("sub", "offer", "v=0\r\n") }),
		"signal_sfu_candidate": member(func(c *client) {
			c.MediaCandidate("sub", []byte(`{"candidate":"candidate:1 1 udp 2130706431 192.0.2.1 3479 typ host","sdpMid":"0","sdpMLineIndex":0}`))
		}),
		"signal_sfu_candidate_null": member(func(c *client) { c.MediaCandidate("pub", nil) }),
		"tracks": member(func(c *client) {
			c.Tracks([]visit.Track{{Mid: "0", Participant: gClinician.ID, Source: "audio", Kind: "audio"}, {Mid: "1", Participant: gClinician.ID, Source: "camera", Kind: "video"}, {Mid: "2", Participant: gPatient.ID, Source: "screen", Kind: "video"}})
		}),
		"tracks_empty":        member(func(c *client) { c.Tracks(nil) }),
		"layers":              member(func(c *client) { c.Layers("camera", []string{"q", "h"}) }),
		"layers_none":         member(func(c *client) { c.Layers("camera", nil) }),
		"speakers":            member(func(c *client) { c.Speakers(gPatient.ID, []string{gPatient.ID, gClinician.ID}) }),
		"speakers_nobody":     member(func(c *client) { c.Speakers("", nil) }),
		"video_paused":        member(func(c *client) { c.VideoPaused(gClinician.ID, "camera", true, "yours") }),
		"video_resumed":       member(func(c *client) { c.VideoPaused(gClinician.ID, "camera", false, "yours") }),
		"video_paused_theirs": member(func(c *client) { c.VideoPaused(gPatient.ID, "screen", true, "theirs") }),
		"chat":                member(func(c *client) { c.Chat(gPatient.ID, "Hello, can you see my screen?", gSince) }),
		"e2ee": member(func(c *client) {
			c.Signal(gPatient.ID, Incoming{Type: "e2ee", To: gClinician.ID, Pub: gE2EEPub, KID: 3405691582, Key: gE2EEKey})
		}),
		"e2ee_hello": member(func(c *client) { c.Signal(gPatient.ID, Incoming{Type: "e2ee", To: gClinician.ID, Pub: gE2EEPub}) }),
		"waiting": member(func(c *client) {
			c.WaitingChanged([]visit.Waiting{{ID: gPatient.ID, Name: "Ada", Since: gSince, Role: store.RolePatient}})
		}),
		"peer_joined_observer": member(func(c *client) {
			c.PeerEvent(visit.PeerJoined, visit.Peer{ID: "prt_guest4waiting", Role: store.RoleGuest, Name: "Grace", Session: "s_guest-page-1", Observer: true})
		}),
		"waiting_empty":        member(func(c *client) { c.WaitingChanged(nil) }),
		"peer_joined":          member(func(c *client) { c.PeerEvent(visit.PeerJoined, gPatient) }),
		"peer_gone":            member(func(c *client) { c.PeerEvent(visit.PeerGone, gPatient) }),
		"peer_left":            member(func(c *client) { c.PeerEvent(visit.PeerLeft, gPatient) }),
		"signal_offer":         relayed(t, `{"type":"signal","to":"prt_rivera3clin7k","description":{"type":"offer","sdp":"v=0\r\n"}}`),
		"signal_offer_sources": relayed(t, `{"type":"signal","to":"prt_rivera3clin7k","description":{"type":"offer","sdp":"v=0\r\n"},"sources":{"0":"audio","1":"camera","2":"screen"}}`),
		"signal_rollback":      relayed(t, `{"type":"signal","to":"prt_rivera3clin7k","description":{"type":"rollback"}}`),
		// Unknown to the server, usernameFragment and the rest are passed on in a fixed order.
		"signal_candidate":         relayed(t, `{"type":"signal","to":"prt_rivera3clin7k","candidate":{"usernameFragment":"abcd","sdpMLineIndex":0,"sdpMid":"0","candidate":"candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host"}}`),
		"signal_candidate_minimal": relayed(t, `{"type":"signal","to":"prt_rivera3clin7k","candidate":{"candidate":""}}`),
		"signal_candidate_null":    relayed(t, `{"type":"signal","to":"prt_rivera3clin7k","candidate":null}`),
		"ice_servers":              ICEServersMsg{Type: "ice_servers", ICEServers: gTURN, ICETransportPolicy: "relay"},
		"ended":                    member(func(c *client) { c.Ended("ended") }),
		"ended_revoked":            member(func(c *client) { c.Ended("revoked") }),
		"bye_server_shutdown":      member(func(c *client) { c.Bye("server_shutdown") }),
		"bye_replaced":             member(func(c *client) { c.Bye("replaced") }),
		"bye_left":                 member(func(c *client) { c.Bye("left") }),
		"error":                    errorMsg(CodeNotAdmitted, "You have not been admitted yet.", "signal"),
		"error_no_reply_to":        errorMsg(CodeBadJSON, "The message is not a JSON object.", ""),
		"pong":                     PongMsg{Type: "pong"},
	}
}

// TestGoldenServerMessages pins the JSON of every server message (docs/protocol.md).
// go test -update rewrites the files after a deliberate change.
func TestGoldenServerMessages(t *testing.T) {
	msgs := goldenMessages(t)
	dir := filepath.Join("testdata", "golden")
	if *update {
		os.MkdirAll(dir, 0o755)
		old, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, f := range old {
			os.Remove(f)
		}
	}
	for name, v := range msgs {
		t.Run(name, func(t *testing.T) {
			got := append(encode(v), '\n')
			path := filepath.Join(dir, name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test -update creates it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s changed (go test -update to accept):\n got %s\nwant %s", name, got, want)
			}
		})
	}
	// Every server message type has a golden file.
	types := map[string]bool{}
	for _, v := range msgs {
		var m struct{ Type string }
		json.Unmarshal(encode(v), &m)
		types[m.Type] = true
	}
	for _, typ := range []string{"welcome", "admitted", "waiting", "peer", "signal", "ice_servers", "ended", "bye", "error", "mode", "tracks", "layers", "speakers", "video_paused", "chat", "pong"} {
		if !types[typ] {
			t.Errorf("no golden file for %q", typ)
		}
	}
	// And no stale files are left.
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, f := range files {
		if _, ok := msgs[strings.TrimSuffix(filepath.Base(f), ".json")]; !ok {
			t.Errorf("%s is not made by this test; remove it", f)
		}
	}
}

// goldenInputs are the client messages in testdata/in and what each decodes to.
// An e2ee message's public key (65 bytes) and wrapped frame key (44 bytes), base64url.
const (
	gE2EEPub = "BAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-P0A"
	gE2EEKey = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoOEhYaHiImKi4yNjo8"
)

var goldenInputs = map[string]Incoming{
	"hello":               {Type: "hello", Visit: "vst_3kq9xw2mfa7cbn5d", Session: "s_8fj2Lq0-Zx_9"},
	"hello_without_visit": {Type: "hello", Session: "s_8fj2Lq0-Zx_9"},
	"signal_offer": {Type: "signal", To: "prt_7hm2zq8rnc4bxd6e", Description: &Description{Type: "offer",
		SDP: "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}},
	"signal_answer": {Type: "signal", To: "prt_7hm2zq8rnc4bxd6e", Description: &Description{Type: "answer",
		SDP: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}},
	"signal_rollback": {Type: "signal", To: "prt_7hm2zq8rnc4bxd6e", Description: &Description{Type: "rollback"}},
	"signal_candidate": {Type: "signal", To: "prt_7hm2zq8rnc4bxd6e", Candidate: json.RawMessage(
		`{"candidate":"candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host generation 0","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}`)},
	"signal_candidate_null": {Type: "signal", To: "prt_7hm2zq8rnc4bxd6e", Candidate: json.RawMessage(`null`)},
	"admit":                 {Type: "admit", Participant: "prt_7hm2zq8rnc4bxd6e"},
	"remove":                {Type: "remove", Participant: "prt_7hm2zq8rnc4bxd6e"},
	"end":                   {Type: "end"},
	"leave":                 {Type: "leave"},
	"ping":                  {Type: "ping"},
	"connection_relay": {Type: "connection", Peer: "prt_7hm2zq8rnc4bxd6e",
		Local:  &Candidate{Type: "relay", Protocol: "udp", RelayProtocol: "tls"},
		Remote: &Candidate{Type: "host", Protocol: "udp"}},
	"connection_direct": {Type: "connection", Peer: "prt_7hm2zq8rnc4bxd6e",
		Local:  &Candidate{Type: "srflx", Protocol: "udp"},
		Remote: &Candidate{Type: "prflx", Protocol: "udp"}},
	"connection_sfu": {Type: "connection", Peer: "sfu", PC: "sub",
		Local:  &Candidate{Type: "host", Protocol: "udp"},
		Remote: &Candidate{Type: "host", Protocol: "udp"}},
	"signal_offer_sources": {Type: "signal", To: "prt_7hm2zq8rnc4bxd6e", Description: &Description{Type: "offer",
		SDP: "v=0\r\n"}, Sources: map[string]string{"0": "audio", "1": "camera", "2": "screen"}},
	"signal_sfu_pub_offer": {Type: "signal", To: "sfu", PC: "pub", Description: &Description{Type: "offer",
		SDP: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}, Sources: map[string]string{"0": "audio", "1": "camera"}},
	"signal_sfu_sub_answer": {Type: "signal", To: "sfu", PC: "sub", Description: &Description{Type: "answer",
		SDP: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}},
	"signal_sfu_candidate": {Type: "signal", To: "sfu", PC: "pub", Candidate: json.RawMessage(
		`{"candidate":"candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host","sdpMid":"0","sdpMLineIndex":0}`)},
	"video_size":        {Type: "video_size", Participant: "prt_7hm2zq8rnc4bxd6e", Source: "camera", Width: 640, Height: 360},
	"video_size_hidden": {Type: "video_size", Participant: "prt_7hm2zq8rnc4bxd6e", Source: "screen"},
	"chat":              {Type: "chat", Text: "Hello, can you hear me?"},
	"video_paused":      {Type: "video_paused", Source: "camera", Paused: true},
	"video_resumed":     {Type: "video_paused", Source: "screen"},
	"chat_with_id":      {Type: "chat", Text: "Hello again", ChatID: "c_3kq9xw2mfa7cbn5d"},
	"e2ee_hello":        {Type: "e2ee", To: "prt_7hm2zq8rnc4bxd6e", Pub: gE2EEPub},
	"e2ee_key":          {Type: "e2ee", To: "prt_7hm2zq8rnc4bxd6e", Pub: gE2EEPub, KID: 3405691582, Key: gE2EEKey},
}

func readInputs(t testing.TB) map[string][]byte {
	files, err := filepath.Glob(filepath.Join("testdata", "in", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs in testdata/in: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = b
	}
	return out
}

func TestGoldenInputsDecode(t *testing.T) {
	files := readInputs(t)
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			want, ok := goldenInputs[name]
			if !ok {
				t.Fatalf("testdata/in/%s.json has no expected result in goldenInputs", name)
			}
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Decode =\n %+v (candidate %s)\nwant\n %+v (candidate %s)", got, got.Candidate, want, want.Candidate)
			}
		})
	}
	for name := range goldenInputs {
		if _, ok := files[name]; !ok {
			t.Errorf("goldenInputs[%q] has no file testdata/in/%s.json", name, name)
		}
	}
	// Every message type a client may send has a golden input.
	for _, typ := range clientTypes {
		found := false
		for _, in := range goldenInputs {
			found = found || in.Type == typ
		}
		if !found {
			t.Errorf("no golden input of type %q", typ)
		}
	}
}

// TestEveryMessageHasPolicy: a message type without a policy entry would be checked
// against the zero Action, which nobody may do; one with a policy but not accepted by
// Decode is dead.
func TestEveryMessageHasPolicy(t *testing.T) {
	for _, typ := range clientTypes {
		if _, ok := messagePolicy[typ]; !ok {
			t.Errorf("message %q has no entry in messagePolicy", typ)
		}
	}
	for typ := range messagePolicy {
		if !slices.Contains(clientTypes, typ) {
			t.Errorf("messagePolicy has %q, which Decode does not accept", typ)
		}
	}
	// The list is what Decode accepts: the golden inputs decode and their types are in it.
	for name, data := range readInputs(t) {
		in, err := Decode(data)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if _, ok := messagePolicy[in.Type]; !ok {
			t.Errorf("%s: Decode accepted type %q, which has no policy", name, in.Type)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	const to = `"to":"prt_7hm2zq8rnc4bxd6e"`
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name, in  string
		code      string
		inReplyTo string // Incoming.Type returned with the error
		mentions  string // the message names the field
	}{
		{name: "empty", in: ``, code: CodeBadJSON},
		{name: "whitespace", in: " \n", code: CodeBadJSON},
		{name: "not JSON", in: `hello`, code: CodeBadJSON},
		{name: "truncated", in: `{"type":"end"`, code: CodeBadJSON},
		{name: "array", in: `[{"type":"end"}]`, code: CodeBadJSON},
		{name: "string", in: `"end"`, code: CodeBadJSON},
		{name: "number", in: `42`, code: CodeBadJSON},
		{name: "null", in: `null`, code: CodeBadJSON},
		{name: "two objects", in: `{"type":"end"}{"type":"leave"}`, code: CodeBadJSON},
		{name: "trailing garbage", in: `{"type":"end"} x`, code: CodeBadJSON},
		{name: "trailing brace", in: `{"type":"end"}}`, code: CodeBadJSON},
		{name: "trailing bracket", in: `{"type":"end"}]`, code: CodeBadJSON},
		{name: "key not UTF-8", in: "{\"type\":\"end\",\"\xff\":1}", code: CodeInvalid, inReplyTo: "end"},

		{name: "no type", in: `{}`, code: CodeUnknownType},
		{name: "empty type", in: `{"type":""}`, code: CodeUnknownType},
		{name: "null type", in: `{"type":null}`, code: CodeUnknownType},
		{name: "type not a string", in: `{"type":1}`, code: CodeUnknownType},
		{name: "unknown type", in: `{"type":"quality"}`, code: CodeUnknownType, inReplyTo: "quality", mentions: "quality"},
		{name: "server-only type", in: `{"type":"tracks"}`, code: CodeUnknownType, inReplyTo: "tracks"},
		{name: "type in other case", in: `{"type":"Hello","session":"s_12345678"}`, code: CodeUnknownType, inReplyTo: "Hello"},
		{name: "server message type", in: `{"type":"welcome"}`, code: CodeUnknownType, inReplyTo: "welcome"},

		{name: "video_paused without paused", in: `{"type":"video_paused","source":"camera"}`, code: CodeInvalid, inReplyTo: "video_paused", mentions: "paused"},
		{name: "video_paused null paused", in: `{"type":"video_paused","source":"camera","paused":null}`, code: CodeInvalid, inReplyTo: "video_paused", mentions: "paused"},
		{name: "video_paused paused a string", in: `{"type":"video_paused","source":"camera","paused":"true"}`, code: CodeInvalid, inReplyTo: "video_paused", mentions: "paused"},
		{name: "video_paused audio", in: `{"type":"video_paused","source":"audio","paused":true}`, code: CodeInvalid, inReplyTo: "video_paused", mentions: "source"},
		{name: "video_paused extra field", in: `{"type":"video_paused","source":"camera","paused":true,"participant":"prt_7hm2zq8rnc4bxd6e"}`, code: CodeInvalid, inReplyTo: "video_paused"},

		{name: "hello without session", in: `{"type":"hello"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "session"},
		{name: "hello null session", in: `{"type":"hello","session":null}`, code: CodeInvalid, inReplyTo: "hello", mentions: "session"},
		{name: "session not a string", in: `{"type":"hello","session":12345678}`, code: CodeInvalid, inReplyTo: "hello", mentions: "session"},
		{name: "session 7 chars", in: `{"type":"hello","session":"s_12345"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "session"},
		{name: "session 65 chars", in: `{"type":"hello","session":"` + long(65) + `"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "session"},
		{name: "session with a dot", in: `{"type":"hello","session":"s_1234.5678"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "session"},
		{name: "session with a space", in: `{"type":"hello","session":"s_1234 5678"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "session"},
		{name: "session non-ASCII", in: `{"type":"hello","session":"s_1234567é"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "session"},
		{name: "visit malformed", in: `{"type":"hello","visit":"VST_1","session":"s_12345678"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "visit"},
		{name: "visit empty", in: `{"type":"hello","visit":"","session":"s_12345678"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "visit"},
		{name: "visit not a string", in: `{"type":"hello","visit":{},"session":"s_12345678"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "visit"},
		{name: "visit id too long", in: `{"type":"hello","visit":"vst_` + long(41) + `","session":"s_12345678"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "visit"},
		{name: "hello unknown field", in: `{"type":"hello","session":"s_12345678","token":"x"}`, code: CodeInvalid, inReplyTo: "hello", mentions: "token"},

		{name: "signal without to", in: `{"type":"signal","candidate":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "to"},
		{name: "to malformed", in: `{"type":"signal","to":"prt-1","candidate":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "to"},
		{name: "to with newline", in: `{"type":"signal","to":"prt_abc\n","candidate":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "to"},
		{name: "neither description nor candidate", in: `{"type":"signal",` + to + `}`, code: CodeInvalid, inReplyTo: "signal", mentions: "exactly one"},
		{name: "both description and candidate", in: `{"type":"signal",` + to + `,"description":{"type":"rollback"},"candidate":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "exactly one"},
		{name: "description null", in: `{"type":"signal",` + to + `,"description":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "description"},
		{name: "description not an object", in: `{"type":"signal",` + to + `,"description":"offer"}`, code: CodeInvalid, inReplyTo: "signal", mentions: "description"},
		{name: "bad description type", in: `{"type":"signal",` + to + `,"description":{"type":"pranswer","sdp":"v=0"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "description.type"},
		{name: "description without type", in: `{"type":"signal",` + to + `,"description":{"sdp":"v=0"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "description.type"},
		{name: "offer without sdp", in: `{"type":"signal",` + to + `,"description":{"type":"offer"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "sdp"},
		{name: "answer with empty sdp", in: `{"type":"signal",` + to + `,"description":{"type":"answer","sdp":""}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "sdp"},
		{name: "sdp not a string", in: `{"type":"signal",` + to + `,"description":{"type":"offer","sdp":1}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "description"},
		{name: "description unknown field", in: `{"type":"signal",` + to + `,"description":{"type":"offer","sdp":"v=0","x":1}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "description"},
		{name: "candidate not an object", in: `{"type":"signal",` + to + `,"candidate":"candidate:1"}`, code: CodeInvalid, inReplyTo: "signal", mentions: "candidate"},
		{name: "candidate unknown field", in: `{"type":"signal",` + to + `,"candidate":{"candidate":"c","foundation":"1"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "candidate"},
		{name: "candidate negative index", in: `{"type":"signal",` + to + `,"candidate":{"candidate":"c","sdpMLineIndex":-1}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "candidate"},
		{name: "candidate index too big", in: `{"type":"signal",` + to + `,"candidate":{"candidate":"c","sdpMLineIndex":65536}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "candidate"},
		{name: "candidate 1025 chars", in: `{"type":"signal",` + to + `,"candidate":{"candidate":"` + long(1025) + `"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "too long"},
		{name: "sdpMid 65 chars", in: `{"type":"signal",` + to + `,"candidate":{"candidate":"c","sdpMid":"` + long(65) + `"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "too long"},
		{name: "ufrag 257 chars", in: `{"type":"signal",` + to + `,"candidate":{"candidate":"c","usernameFragment":"` + long(257) + `"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "too long"},
		{name: "signal unknown field", in: `{"type":"signal",` + to + `,"candidate":null,"from":"prt_x"}`, code: CodeInvalid, inReplyTo: "signal", mentions: "from"},

		{name: "admit without participant", in: `{"type":"admit"}`, code: CodeInvalid, inReplyTo: "admit", mentions: "participant"},
		{name: "admit malformed participant", in: `{"type":"admit","participant":"prt_"}`, code: CodeInvalid, inReplyTo: "admit", mentions: "participant"},
		{name: "end with a field", in: `{"type":"end","reason":"done"}`, code: CodeInvalid, inReplyTo: "end", mentions: "reason"},
		{name: "leave with a field", in: `{"type":"leave","visit":"vst_1"}`, code: CodeInvalid, inReplyTo: "leave", mentions: "visit"},
		{name: "unknown field named long", in: `{"type":"end","` + long(100) + `":1}`, code: CodeInvalid, inReplyTo: "end", mentions: long(32) + "..."},

		{name: "connection without peer", in: `{"type":"connection","local":{"candidate_type":"host","protocol":"udp"},"remote":{"candidate_type":"host","protocol":"udp"}}`, code: CodeInvalid, inReplyTo: "connection", mentions: "peer"},
		{name: "connection without remote", in: `{"type":"connection","peer":"prt_abc","local":{"candidate_type":"host","protocol":"udp"}}`, code: CodeInvalid, inReplyTo: "connection", mentions: "remote"},
		{name: "connection local null", in: `{"type":"connection","peer":"prt_abc","local":null,"remote":{"candidate_type":"host","protocol":"udp"}}`, code: CodeInvalid, inReplyTo: "connection", mentions: "local"},
		{name: "connection unknown candidate type", in: `{"type":"connection","peer":"prt_abc","local":{"candidate_type":"turn","protocol":"udp"},"remote":{"candidate_type":"host","protocol":"udp"}}`, code: CodeInvalid, inReplyTo: "connection", mentions: "local.candidate_type"},
		{name: "connection unknown protocol", in: `{"type":"connection","peer":"prt_abc","local":{"candidate_type":"host","protocol":"sctp"},"remote":{"candidate_type":"host","protocol":"udp"}}`, code: CodeInvalid, inReplyTo: "connection", mentions: "local.protocol"},
		{name: "connection relay_protocol on host", in: `{"type":"connection","peer":"prt_abc","local":{"candidate_type":"host","protocol":"udp","relay_protocol":"tls"},"remote":{"candidate_type":"host","protocol":"udp"}}`, code: CodeInvalid, inReplyTo: "connection", mentions: "relay_protocol"},
		{name: "connection unknown relay_protocol", in: `{"type":"connection","peer":"prt_abc","local":{"candidate_type":"relay","protocol":"udp","relay_protocol":"dtls"},"remote":{"candidate_type":"host","protocol":"udp"}}`, code: CodeInvalid, inReplyTo: "connection", mentions: "relay_protocol"},
		{name: "connection with an address", in: `{"type":"connection","peer":"prt_abc","local":{"candidate_type":"host","protocol":"udp","address":"192.0.2.1"},"remote":{"candidate_type":"host","protocol":"udp"}}`, code: CodeInvalid, inReplyTo: "connection", mentions: "local"},
		{name: "connection unknown field", in: `{"type":"connection","peer":"prt_abc","local":{"candidate_type":"host","protocol":"udp"},"remote":{"candidate_type":"host","protocol":"udp"},"rtt":5}`, code: CodeInvalid, inReplyTo: "connection", mentions: "rtt"},
		{name: "signal to the SFU without pc", in: `{"type":"signal","to":"sfu","candidate":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "pc"},
		{name: "signal to the SFU, bad pc", in: `{"type":"signal","to":"sfu","pc":"both","candidate":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "pc"},
		{name: "pc to a peer", in: `{"type":"signal",` + to + `,"pc":"pub","candidate":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "pc"},
		{name: "to SFU in capitals", in: `{"type":"signal","to":"SFU","pc":"pub","candidate":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "to"},
		{name: "sfu_session to a peer", in: `{"type":"signal",` + to + `,"sfu_session":"f_0M3UZSr-brJOjcvr","candidate":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "sfu_session"},
		{name: "sfu_session not a session", in: `{"type":"signal","to":"sfu","pc":"pub","sfu_session":"f 1","candidate":null}`, code: CodeInvalid, inReplyTo: "signal", mentions: "sfu_session"},
		{name: "sources without a description", in: `{"type":"signal",` + to + `,"candidate":null,"sources":{"0":"camera"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "sources"},
		{name: "unknown source", in: `{"type":"signal",` + to + `,"description":{"type":"offer","sdp":"v=0"},"sources":{"0":"window"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "sources"},
		{name: "bad mid", in: `{"type":"signal",` + to + `,"description":{"type":"offer","sdp":"v=0"},"sources":{"a b":"camera"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "sources"},
		{name: "sources not an object", in: `{"type":"signal",` + to + `,"description":{"type":"offer","sdp":"v=0"},"sources":["camera"]}`, code: CodeInvalid, inReplyTo: "signal", mentions: "sources"},
		{name: "too many sources", in: `{"type":"signal",` + to + `,"description":{"type":"offer","sdp":"v=0"},"sources":{"0":"audio","1":"audio","2":"audio","3":"audio","4":"audio","5":"audio","6":"audio","7":"audio","8":"audio"}}`, code: CodeInvalid, inReplyTo: "signal", mentions: "sources"},
		{name: "connection to the SFU without pc", in: `{"type":"connection","peer":"sfu","local":{"candidate_type":"host","protocol":"udp"},"remote":{"candidate_type":"host","protocol":"udp"}}`, code: CodeInvalid, inReplyTo: "connection", mentions: "pc"},
		{name: "video_size without participant", in: `{"type":"video_size","source":"camera","width":1,"height":1}`, code: CodeInvalid, inReplyTo: "video_size", mentions: "participant"},
		{name: "video_size of audio", in: `{"type":"video_size","participant":"prt_abc","source":"audio","width":1,"height":1}`, code: CodeInvalid, inReplyTo: "video_size", mentions: "source"},
		{name: "video_size negative", in: `{"type":"video_size","participant":"prt_abc","source":"camera","width":-1,"height":1}`, code: CodeInvalid, inReplyTo: "video_size", mentions: "width"},
		{name: "video_size huge", in: `{"type":"video_size","participant":"prt_abc","source":"camera","width":100000,"height":1}`, code: CodeInvalid, inReplyTo: "video_size", mentions: "width"},
		{name: "video_size fraction", in: `{"type":"video_size","participant":"prt_abc","source":"camera","width":1.5,"height":1}`, code: CodeInvalid, inReplyTo: "video_size", mentions: "width"},
		{name: "video_size without height", in: `{"type":"video_size","participant":"prt_abc","source":"camera","width":10}`, code: CodeInvalid, inReplyTo: "video_size", mentions: "height"},
		{name: "video_size half hidden", in: `{"type":"video_size","participant":"prt_abc","source":"camera","width":10,"height":0}`, code: CodeInvalid, inReplyTo: "video_size", mentions: "hidden"},
		{name: "chat empty", in: `{"type":"chat","text":"  "}`, code: CodeInvalid, inReplyTo: "chat", mentions: "text"},
		{name: "chat too long", in: `{"type":"chat","text":"` + long(2001) + `"}`, code: CodeInvalid, inReplyTo: "chat", mentions: "text"},
		{name: "chat with from", in: `{"type":"chat","text":"hi","from":"prt_x"}`, code: CodeInvalid, inReplyTo: "chat", mentions: "from"},
		{name: "chat id too short", in: `{"type":"chat","text":"hi","id":"c_1"}`, code: CodeInvalid, inReplyTo: "chat", mentions: "id"},
		{name: "chat id not a string", in: `{"type":"chat","text":"hi","id":7}`, code: CodeInvalid, inReplyTo: "chat", mentions: "id"},
		{name: "e2ee to the SFU", in: `{"type":"e2ee","to":"sfu","pub":"` + gE2EEPub + `"}`, code: CodeInvalid, inReplyTo: "e2ee", mentions: "to"},
		{name: "e2ee without pub", in: `{"type":"e2ee",` + to + `}`, code: CodeInvalid, inReplyTo: "e2ee", mentions: "pub"},
		{name: "e2ee pub too short", in: `{"type":"e2ee",` + to + `,"pub":"` + gE2EEPub[1:] + `"}`, code: CodeInvalid, inReplyTo: "e2ee", mentions: "pub"},
		{name: "e2ee key without kid", in: `{"type":"e2ee",` + to + `,"pub":"` + gE2EEPub + `","key":"` + gE2EEKey + `"}`, code: CodeInvalid, inReplyTo: "e2ee", mentions: "kid"},
		{name: "e2ee kid without key", in: `{"type":"e2ee",` + to + `,"pub":"` + gE2EEPub + `","kid":7}`, code: CodeInvalid, inReplyTo: "e2ee", mentions: "key"},
		{name: "e2ee kid 0", in: `{"type":"e2ee",` + to + `,"pub":"` + gE2EEPub + `","kid":0,"key":"` + gE2EEKey + `"}`, code: CodeInvalid, inReplyTo: "e2ee", mentions: "kid"},
		{name: "e2ee kid over 32 bits", in: `{"type":"e2ee",` + to + `,"pub":"` + gE2EEPub + `","kid":4294967296,"key":"` + gE2EEKey + `"}`, code: CodeInvalid, inReplyTo: "e2ee", mentions: "kid"},
		{name: "e2ee key padded", in: `{"type":"e2ee",` + to + `,"pub":"` + gE2EEPub + `","kid":7,"key":"` + gE2EEKey + `="}`, code: CodeInvalid, inReplyTo: "e2ee", mentions: "key"},
		{name: "e2ee with from", in: `{"type":"e2ee",` + to + `,"pub":"` + gE2EEPub + `","from":"prt_x"}`, code: CodeInvalid, inReplyTo: "e2ee", mentions: "from"},
		{name: "over 64 KiB", in: `{"type":"signal",` + to + `,"description":{"type":"offer","sdp":"` + long(MaxMessage) + `"}}`, code: CodeTooLarge},
		{name: "64 KiB + 1 of spaces", in: `{"type":"end"}` + strings.Repeat(" ", MaxMessage+1-14), code: CodeTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := Decode([]byte(tc.in))
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Decode = %+v, %v; want a *ProtocolError %s", in, err, tc.code)
			}
			if pe.Code != tc.code {
				t.Errorf("code %s (%s), want %s", pe.Code, pe.Message, tc.code)
			}
			if in.Type != tc.inReplyTo {
				t.Errorf("type %q returned with the error, want %q", in.Type, tc.inReplyTo)
			}
			if !strings.Contains(pe.Message, tc.mentions) {
				t.Errorf("message %q does not mention %q", pe.Message, tc.mentions)
			}
			if len(pe.Message) > 200 {
				t.Errorf("message is %d bytes long", len(pe.Message))
			}
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	// Exactly MaxMessage bytes is allowed.
	head := `{"type":"signal","to":"prt_7hm2zq8rnc4bxd6e","description":{"type":"offer","sdp":"`
	tail := `"}}`
	msg := head + strings.Repeat("a", MaxMessage-len(head)-len(tail)) + tail
	if len(msg) != MaxMessage {
		t.Fatal(len(msg))
	}
	if _, err := Decode([]byte(msg)); err != nil {
		t.Errorf("a message of exactly %d bytes: %v", MaxMessage, err)
	}
	for _, ok := range []string{
		`{"type":"hello","session":"` + strings.Repeat("x", 8) + `"}`,
		`{"type":"hello","session":"` + strings.Repeat("x", 64) + `"}`,
		`{"type":"hello","visit":"vst_` + strings.Repeat("a", 40) + `","session":"s_12345678"}`,
		`{"type":"signal","to":"prt_7hm2zq8rnc4bxd6e","candidate":{"candidate":"` + strings.Repeat("a", 1024) + `"}}`,
		`{"type":"signal","to":"prt_7hm2zq8rnc4bxd6e","candidate":{}}`,
		`{"type":"signal","to":"prt_7hm2zq8rnc4bxd6e","candidate":{"candidate":"c","sdpMid":null,"sdpMLineIndex":null}}`,
		`{"type":"hello","visit":null,"session":"s_12345678"}`,
		` {"type" : "end"} ` + "\n",
	} {
		if _, err := Decode([]byte(ok)); err != nil {
			t.Errorf("Decode(%.80s): %v", ok, err)
		}
	}
}

// FuzzDecode: no input panics Decode, and what it accepts is a consistent message that
// the rest of the server can rely on. Seeds: testdata/fuzz/FuzzDecode (made from
// testdata/in) and the golden inputs themselves.
func FuzzDecode(f *testing.F) {
	for _, data := range readInputs(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := Decode(data)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ProtocolError", err)
			}
			if !strings.Contains(errorKnown, " "+pe.Code+" ") {
				t.Fatalf("unknown error code %q", pe.Code)
			}
			return
		}
		if len(data) > MaxMessage {
			t.Fatalf("accepted %d bytes", len(data))
		}
		if !json.Valid(data) {
			t.Fatalf("accepted %q, which is not one JSON value", data)
		}
		if _, ok := messagePolicy[in.Type]; !ok || !slices.Contains(clientTypes, in.Type) {
			t.Fatalf("accepted type %q", in.Type)
		}
		switch in.Type {
		case "hello":
			if !clientIDRE.MatchString(in.Session) || in.Visit != "" && !idRE.MatchString(in.Visit) {
				t.Fatalf("hello with session %q visit %q", in.Session, in.Visit)
			}
		case "signal":
			if !peerRE.MatchString(in.To) || (in.To == SFU) != (in.PC == "pub" || in.PC == "sub") || (in.To != SFU && in.PC != "") {
				t.Fatalf("signal to %q pc %q", in.To, in.PC)
			}
			if len(in.Sources) > maxSources || (in.Sources != nil && in.Description == nil) {
				t.Fatalf("sources %v", in.Sources)
			}
			if (in.Description == nil) == (in.Candidate == nil) {
				t.Fatalf("signal with description %v and candidate %s: want exactly one", in.Description, in.Candidate)
			}
			if d := in.Description; d != nil {
				if !slices.Contains([]string{"offer", "answer", "rollback"}, d.Type) || d.Type != "rollback" && d.SDP == "" {
					t.Fatalf("description %+v", d)
				}
			}
			if c := in.Candidate; c != nil && string(c) != "null" {
				var cand map[string]any
				if err := json.Unmarshal(c, &cand); err != nil {
					t.Fatalf("candidate %s relayed is not a JSON object: %v", c, err)
				}
				for k := range cand {
					if !slices.Contains([]string{"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"}, k) {
						t.Fatalf("candidate %s relays field %q", c, k)
					}
				}
			}
			// What is relayed encodes.
			json.Marshal(SignalMsg{Type: "signal", From: "prt_x", Description: in.Description, Candidate: in.Candidate})
		case "admit", "remove":
			if !idRE.MatchString(in.Participant) {
				t.Fatalf("%s %q", in.Type, in.Participant)
			}
		case "video_size":
			if !idRE.MatchString(in.Participant) || in.Width < 0 || in.Height < 0 || in.Width > maxVideoPixel || in.Height > maxVideoPixel {
				t.Fatalf("video_size %+v", in)
			}
		case "chat":
			if in.Text == "" || len([]rune(in.Text)) > MaxChat {
				t.Fatalf("chat of %d characters", len([]rune(in.Text)))
			}
		case "connection":
			if !peerRE.MatchString(in.Peer) || in.Local == nil || in.Remote == nil ||
				in.Local.validate("local") != nil || in.Remote.validate("remote") != nil {
				t.Fatalf("connection %+v", in)
			}
		}
	})
}

const errorKnown = " bad_json too_large unknown_type invalid "

// TestFuzzCorpusMatchesInputs: the checked-in corpus holds every golden input.
func TestFuzzCorpusMatchesInputs(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	var corpus [][]byte
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		corpus = append(corpus, b)
	}
	names := []string{}
	for name := range readInputs(t) {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		data := readInputs(t)[name]
		entry := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		path := filepath.Join(dir, "in_"+name)
		if *update {
			os.MkdirAll(dir, 0o755)
			os.WriteFile(path, []byte(entry), 0o644)
			continue
		}
		if !slices.ContainsFunc(corpus, func(b []byte) bool { return string(b) == entry }) {
			t.Errorf("testdata/in/%s.json is not in the fuzz corpus %s (go test -update adds it)", name, dir)
		}
	}
}

func TestErrorCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code string
	}{
		{"protocol error", invalid("to is malformed."), CodeInvalid},
		{"wrapped protocol error", fmt.Errorf("x: %w", &ProtocolError{CodeTooLarge, "big"}), CodeTooLarge},
		{"not found", fmt.Errorf("admit: %w", visit.ErrNotFound), CodeNotFound},
		{"forbidden", visit.ErrForbidden, CodeForbidden},
		{"not admitted", visit.ErrNotAdmitted, CodeNotAdmitted},
		{"wrong state", visit.ErrWrongState, CodeWrongState},
		{"visit ended", visit.ErrVisitEnded, CodeVisitEnded},
		{"link expired", visit.ErrLinkExpired, CodeLinkExpired},
		{"link revoked", visit.ErrLinkRevoked, CodeLinkRevoked},
		{"database", fmt.Errorf("admit prt_1: %w", errors.New("database is locked (5) SQLITE_BUSY")), CodeInternal},
		{"store not found is internal", store.ErrNotFound, CodeInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := errorCode(tc.err)
			if code != tc.code {
				t.Errorf("code %s, want %s", code, tc.code)
			}
			if code == CodeInternal && (strings.Contains(msg, "SQLITE") || strings.Contains(msg, "not found")) {
				t.Errorf("internal text %q reaches the client", msg)
			}
			if msg == "" {
				t.Error("empty message")
			}
		})
	}
}

// What the SFU says to a participant reaches it after the message that puts its call in
// SFU mode, whichever goroutine queued first: a client drops an SFU offer it gets before.
func TestSFUMessagesFollowMode(t *testing.T) {
	for _, announce := range []string{"admitted", "mode"} {
		t.Run(announce, func(t *testing.T) {
			c := &client{out: make(chan any, 8), final: make(chan final, 1)}
			c.MediaDescription("sub", "offer", "v=0\r\n")
			c.Tracks(nil)
			c.Mode(visit.MediaState{Mode: visit.ModeP2P}) // not SFU mode: still held
			if n := len(c.out); n != 1 {
				t.Fatalf("%d messages queued before SFU mode, want only the p2p mode message", n)
			}
			<-c.out
			ms := visit.MediaState{Mode: visit.ModeSFU, SFUSession: "f_1"}
			if announce == "admitted" {
				c.Admitted(nil, ms)
			} else {
				c.Mode(ms)
			}
			c.MediaCandidate("sub", nil)
			var got []string
			for len(c.out) > 0 {
				switch v := (<-c.out).(type) {
				case admittedNote:
					got = append(got, "admitted "+v.msg.Mode)
				case ModeMsg:
					got = append(got, "mode "+v.Mode)
				case SignalMsg:
					if v.Description != nil {
						got = append(got, "signal "+v.Description.Type)
					} else {
						got = append(got, "signal candidate")
					}
				case TracksMsg:
					got = append(got, "tracks")
				default:
					got = append(got, fmt.Sprintf("%T", v))
				}
			}
			want := []string{announce + " sfu", "signal offer", "tracks", "signal candidate"}
			if !slices.Equal(got, want) {
				t.Fatalf("queued %q, want %q", got, want)
			}
		})
	}
}
