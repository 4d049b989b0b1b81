// Package audit is Bedside's security audit trail: who did what, when, from where. Events
// are recorded through the Recorder interface, which every part that has something to say
// (web, signal, visit, turn) receives at construction. The tamper-evident log (hash chain,
// signed checkpoints, verify and export) implements Recorder; until it is wired, Discard
// stands in.
//
// An event never carries tokens, passwords, SDP, candidates or clinical content, and no
// patient name: participants are named by id.
package audit

import (
	"context"
	"time"
)

// Action names what happened. The list grows with the features; names are stable, because
// exports and searches use them.
type Action string

const (
	SignIn        Action = "auth.sign_in"
	SignInFailed  Action = "auth.sign_in_failed"
	SignOut       Action = "auth.sign_out"
	VisitCreate   Action = "visit.create"
	VisitLink     Action = "visit.link"
	VisitRevoke   Action = "visit.revoke"
	VisitJoin     Action = "visit.join"     // a link holder became a participant
	VisitConnect  Action = "visit.connect"  // a participant's signalling connected
	VisitAdmit    Action = "visit.admit"    //
	VisitLeave    Action = "visit.leave"    // left on purpose
	VisitGone     Action = "visit.gone"     // connection lost
	VisitRemove   Action = "visit.remove"   // removed by the clinician
	VisitEnd      Action = "visit.end"      //
	CandidatePair Action = "call.candidate" // the selected ICE candidate pair (direct or relayed)
	TURNAllocate  Action = "turn.allocate"
	TURNDelete    Action = "turn.delete"
	TURNRefused   Action = "turn.refused" // a refused allocation, permission or credential
)

// Event is one entry of the trail.
type Event struct {
	Time      time.Time // UTC; set by the recorder when zero
	Action    Action
	ActorID   string // user id or participant id; "" for anonymous
	ActorRole string // admin, clinician, staff, patient, guest, system
	VisitID   string
	SubjectID string // whom it was done to (a participant, a user)
	Addr      string // client IP address (no port)
	UserAgent string
	Outcome   string            // "ok", or a short reason code such as "bad_credentials"
	Detail    map[string]string // small, non-identifying facts (candidate type, relay protocol)
}

// Recorder records events. Record must not block for long: callers are request handlers
// and the signalling path. An error means the event could not be made durable; callers log
// it and go on, except where the operation itself must not happen unaudited (they say so).
type Recorder interface {
	Record(ctx context.Context, e Event) error
}

// Discard is a Recorder that keeps nothing.
var Discard Recorder = discard{}

type discard struct{}

func (discard) Record(context.Context, Event) error { return nil }
