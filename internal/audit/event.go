// Package audit is Bedside's security audit trail: who did what, when, from where. Events
// are recorded through the Recorder interface, which every part that has something to say
// (web, signal, visit, turn) receives at construction. The tamper-evident log (hash chain,
// signed checkpoints, verify and export) is Log in this package, over a store that appends
// rows; Discard stands in where nothing is kept (unit tests).
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
	VisitInvite   Action = "visit.invite"   // a guest link made (Detail role: participant, observer)
	VisitMode     Action = "visit.mode"     // the call moved to the SFU (Detail mode, reason)
	CandidatePair Action = "call.candidate" // the selected ICE candidate pair (direct or relayed)
	TURNAllocate  Action = "turn.allocate"
	TURNDelete    Action = "turn.delete"
	TURNRefused   Action = "turn.refused" // a refused allocation, permission or credential

	LinkFailed      Action = "visit.link_failed"   // a link that opens nothing (unknown, expired, revoked)
	BreakGlassGrant Action = "breakglass.grant"    // an admin gave a clinician emergency access
	BreakGlassUse   Action = "breakglass.use"      // emergency access opened a visit not the user's own
	BreakGlassEnd   Action = "breakglass.revoke"   // emergency access withdrawn before its end
	SessionExpired  Action = "auth.session_ended"  // idle or absolute expiry (Outcome idle, lifetime)
	SessionsEnded   Action = "auth.sessions_ended" // an admin (or disabling) ended all of a user's sessions
	Lockout         Action = "auth.lockout"        // too many failures: Detail scope account, address, visit
	RateLimited     Action = "auth.rate_limited"   // a request refused while locked out
	MFAPassed       Action = "auth.mfa"            // second factor accepted (Detail method)
	MFAFailed       Action = "auth.mfa_failed"     // wrong or replayed code, failed passkey
	MFAEnroll       Action = "auth.mfa_enroll"     // a TOTP or passkey added (Detail method)
	MFARemove       Action = "auth.mfa_remove"     // a TOTP or passkey removed (Detail method)
	MFAReset        Action = "admin.mfa_reset"     // an admin removed every second factor of a user
	RecoveryCodes   Action = "auth.recovery_codes" // new recovery codes issued
	UserCreate      Action = "admin.user_create"
	UserDisable     Action = "admin.user_disable"
	UserEnable      Action = "admin.user_enable"
	ConfigStart     Action = "config.start"    // the server started with these security settings
	RetentionPurge  Action = "data.retention"  // visit data older than the retention period deleted
	AuditSearch     Action = "audit.search"    // an admin searched the trail
	AuditExport     Action = "audit.export"    // the trail was exported
	KeyCreated      Action = "config.key_made" // a key file was generated (Detail key: data, audit)
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
