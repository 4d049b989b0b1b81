// Package store defines Bedside's persistent records and the Store interface that the
// database backends (store/sqlite; later store/postgres) implement. Every backend passes the
// shared suite in store/storetest.
//
// Only what the service needs is stored: no tokens (only their SHA-256), no SDP, no media.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/bedside/bedside/internal/audit"
)

// Errors every backend returns, so callers can tell them apart with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("already exists")
)

// Role is what a signed-in user may do. Patients and guests hold no account; their role
// lives on their Participant.
type Role string

const (
	RoleAdmin     Role = "admin"
	RoleClinician Role = "clinician"
	RoleStaff     Role = "staff"
	RolePatient   Role = "patient"
	RoleGuest     Role = "guest"
)

// UserRoles are the roles an account can have.
var UserRoles = []Role{RoleAdmin, RoleClinician, RoleStaff}

// User is a staff, clinician or admin account.
type User struct {
	ID           string
	Email        string // lower case
	Name         string
	Role         Role
	PasswordHash string // argon2id, PHC string format
	Disabled     bool
	CreatedAt    time.Time
}

// Session is a sign-in session. Its id is the SHA-256 of the cookie value.
type Session struct {
	IDHash     []byte
	UserID     string
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time // absolute end
	Stage      string    // "full" (or ""), "mfa", "enroll": see auth.Stage
	Challenge  []byte    // a WebAuthn ceremony in progress, JSON
}

// TOTP is a user's authenticator-app secret.
type TOTP struct {
	UserID      string
	Secret      string     // base32, as the app was given it
	ConfirmedAt *time.Time // nil until the first code was entered
	LastStep    int64      // the last time step accepted: a code is good once
	CreatedAt   time.Time
}

// Passkey is a WebAuthn credential of a user.
type Passkey struct {
	ID           string
	UserID       string
	CredentialID []byte
	Credential   []byte // the library's credential record, JSON
	Name         string
	CreatedAt    time.Time
	LastUsedAt   *time.Time
}

// BreakGlass is an emergency access grant.
type BreakGlass struct {
	ID        string
	UserID    string
	GrantedBy string
	Reason    string
	CreatedAt time.Time
	ExpiresAt time.Time
	RevokedAt *time.Time
}

// Active reports whether the grant is in force at t.
func (b BreakGlass) Active(t time.Time) bool {
	return b.RevokedAt == nil && t.Before(b.ExpiresAt) && !t.Before(b.CreatedAt)
}

// VisitState is where a visit stands, as the console shows it.
type VisitState string

const (
	VisitScheduled VisitState = "scheduled"
	VisitWaiting   VisitState = "waiting"
	VisitInCall    VisitState = "in_call"
	VisitEnded     VisitState = "ended"
)

// Visit is one appointment between a clinician and a patient.
type Visit struct {
	ID            string
	ClinicianID   string
	PatientName   string // as the clinician typed it; may be empty
	ScheduledAt   time.Time
	CreatedAt     time.Time
	LinkHash      []byte // SHA-256 of the patient link token
	LinkExpiresAt time.Time
	RevokedAt     *time.Time
	State         VisitState
	EndedAt       *time.Time
	// Privacy: everyone in the visit uses relay-only ICE, so nobody's home address is shown
	// to the other party.
	Privacy bool
	// Policy says when the call goes through the SFU.
	Policy MediaPolicy
}

// MediaPolicy says when a visit's call goes through the SFU instead of browser to browser.
type MediaPolicy string

const (
	PolicyAuto MediaPolicy = "auto" // peer to peer for two; the SFU from the third person admitted on
	PolicyP2P  MediaPolicy = "p2p"  // always browser to browser
	PolicySFU  MediaPolicy = "sfu"  // always through the SFU
)

// Participant is one person in one visit: the clinician, the patient, later guests. A
// patient's participant is made when they join through the link; its credential (in a
// cookie) brings them back after a reload without a new admission.
type Participant struct {
	ID             string
	VisitID        string
	Role           Role
	UserID         string // for account holders; "" for patients and guests
	Name           string // display name
	CredentialHash []byte // SHA-256 of the participant cookie secret; nil for account holders
	CreatedAt      time.Time
	AdmittedAt     *time.Time
	LeftAt         *time.Time
	RemovedAt      *time.Time // removed by the clinician: its cookie no longer works
	// GuestLinkID is the guest link the participant came through ("" for the patient link
	// and for account holders).
	GuestLinkID string
	// Observer: the participant watches and listens and publishes nothing (a guest link of
	// role observer).
	Observer bool
}

// GuestRole is what a guest link lets its holder do in the call.
type GuestRole string

const (
	GuestParticipant GuestRole = "participant" // camera and microphone, like the patient
	GuestObserver    GuestRole = "observer"    // sees and hears the others; publishes nothing
)

// GuestLink is a link for a caregiver, interpreter or specialist to join a visit. Only the
// SHA-256 of its token is stored.
type GuestLink struct {
	ID        string
	VisitID   string
	Role      GuestRole
	LinkHash  []byte
	CreatedAt time.Time
	ExpiresAt time.Time
	RevokedAt *time.Time // set when the visit is revoked
}

// Candidate is one side of a selected ICE candidate pair: what kind of path, never an
// address.
type Candidate struct {
	Type          string // host, srflx, prflx, relay
	Protocol      string // udp, tcp
	RelayProtocol string // udp, tcp, tls: how the browser reached the TURN server ("" unless relay)
}

// Relayed reports whether media on this side goes through a TURN relay.
func (c Candidate) Relayed() bool { return c.Type == "relay" }

// Connection is the selected candidate pair a participant's browser reported towards one
// peer: the latest, and when it was first and last reported.
type Connection struct {
	VisitID       string
	ParticipantID string
	PeerID        string
	Local, Remote Candidate
	FirstAt       time.Time
	UpdatedAt     time.Time
	Changes       int // how often the pair changed after the first report
}

// Relayed reports whether the pair goes through a relay on either side.
func (c Connection) Relayed() bool { return c.Local.Relayed() || c.Remote.Relayed() }

// Store is everything Bedside keeps. Consumers declare the smaller interfaces they use.
type Store interface {
	CreateUser(ctx context.Context, u User) error
	UserByID(ctx context.Context, id string) (User, error)
	UserByEmail(ctx context.Context, email string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	SetUserDisabled(ctx context.Context, id string, disabled bool) error

	CreateSession(ctx context.Context, s Session) error
	SessionByHash(ctx context.Context, idHash []byte) (Session, error)
	TouchSession(ctx context.Context, idHash []byte, at time.Time) error
	DeleteSession(ctx context.Context, idHash []byte) error
	DeleteUserSessions(ctx context.Context, userID string) error
	DeleteExpiredSessions(ctx context.Context, now time.Time, idle time.Duration) (int, error)
	SetSessionChallenge(ctx context.Context, idHash []byte, challenge []byte) error
	CountUserSessions(ctx context.Context, userID string) (int, error)

	// Second factors.
	PutTOTP(ctx context.Context, t TOTP) error // replaces the user's secret (unconfirmed)
	TOTPByUser(ctx context.Context, userID string) (TOTP, error)
	ConfirmTOTP(ctx context.Context, userID string, at time.Time, step int64) error
	// UseTOTPStep records step as used; ErrConflict when it is not after the last one used.
	UseTOTPStep(ctx context.Context, userID string, step int64) error
	DeleteTOTP(ctx context.Context, userID string) error
	SetRecoveryCodes(ctx context.Context, userID string, hashes [][]byte) error
	// UseRecoveryCode marks an unused code used; ErrNotFound when there is none such.
	UseRecoveryCode(ctx context.Context, userID string, hash []byte, at time.Time) error
	RecoveryCodesLeft(ctx context.Context, userID string) (int, error)
	CreatePasskey(ctx context.Context, p Passkey) error
	UserPasskeys(ctx context.Context, userID string) ([]Passkey, error)
	UpdatePasskey(ctx context.Context, id string, credential []byte, usedAt time.Time) error
	DeletePasskey(ctx context.Context, userID, id string) error
	// DeleteSecondFactors removes a user's TOTP, recovery codes and passkeys.
	DeleteSecondFactors(ctx context.Context, userID string) error

	// Lockouts. RecordFailure counts a failure of key within window (a failure after the
	// window starts a new one) and, at max failures, locks the key until now+lockFor. It
	// returns the lock's end (zero when not locked).
	RecordFailure(ctx context.Context, key string, now time.Time, window time.Duration, max int, lockFor time.Duration) (time.Time, error)
	LockedUntil(ctx context.Context, key string) (time.Time, error)
	ClearFailures(ctx context.Context, key string) error

	// Break-glass.
	CreateBreakGlass(ctx context.Context, b BreakGlass) error
	// BreakGlassGrants returns grants ending after since, newest first (userID "" = all).
	BreakGlassGrants(ctx context.Context, userID string, since time.Time) ([]BreakGlass, error)
	RevokeBreakGlass(ctx context.Context, userID string, at time.Time) (int, error)

	// DeleteVisitsBefore deletes visits (and their participants) scheduled before t and not
	// live (ended, or whose link expired before t). It returns how many.
	DeleteVisitsBefore(ctx context.Context, t time.Time) (int, error)

	CreateVisit(ctx context.Context, v Visit) error
	VisitByID(ctx context.Context, id string) (Visit, error)
	VisitByLinkHash(ctx context.Context, linkHash []byte) (Visit, error)
	// ListVisits returns visits scheduled in [from, to), optionally of one clinician
	// (clinicianID "" = all), ordered by scheduled time.
	ListVisits(ctx context.Context, clinicianID string, from, to time.Time) ([]Visit, error)
	SetVisitLink(ctx context.Context, id string, linkHash []byte, expiresAt time.Time) error
	SetVisitState(ctx context.Context, id string, state VisitState) error
	// RevokeVisit stamps the visit and its guest links revoked (the first time is kept).
	// A new patient link (SetVisitLink) clears the visit's mark, not its guest links'.
	RevokeVisit(ctx context.Context, id string, at time.Time) error
	EndVisit(ctx context.Context, id string, at time.Time) error

	CreateGuestLink(ctx context.Context, g GuestLink) error
	GuestLinkByHash(ctx context.Context, linkHash []byte) (GuestLink, error)
	VisitGuestLinks(ctx context.Context, visitID string) ([]GuestLink, error)

	CreateParticipant(ctx context.Context, p Participant) error
	ParticipantByID(ctx context.Context, id string) (Participant, error)
	VisitParticipants(ctx context.Context, visitID string) ([]Participant, error)
	AdmitParticipant(ctx context.Context, id string, at time.Time) error
	SetParticipantLeft(ctx context.Context, id string, at time.Time) error
	RemoveParticipant(ctx context.Context, id string, at time.Time) error
	SetParticipantName(ctx context.Context, id, name string) error
	// RecentDepartures lists who has been out since since: participants who left or were
	// removed at or after it, every participant of a visit ended at or after it, and those
	// who came in by a link (not an account) of a visit whose links were revoked at or after
	// it; and those visits. The relay revokes them again after a restart (docs/design.md,
	// decision 26).
	RecentDepartures(ctx context.Context, since time.Time) (participants, visits []string, err error)

	// The audit trail (internal/audit): append-only, hash-chained rows.
	AppendAudit(ctx context.Context, e audit.Event, link func(prev []byte, seq int64) []byte) (audit.Entry, error)
	AuditEntries(ctx context.Context, afterSeq int64, limit int) ([]audit.Entry, error)
	AuditHead(ctx context.Context) (size int64, hash []byte, err error)
	SearchAudit(ctx context.Context, q audit.Query) ([]audit.Entry, error)
	// SetConnection records a participant's selected candidate pair towards a peer,
	// replacing the earlier one (counting the change when it differs).
	SetConnection(ctx context.Context, c Connection) error
	// VisitConnections returns every pair reported in a visit.
	VisitConnections(ctx context.Context, visitID string) ([]Connection, error)

	Ping(ctx context.Context) error
	Close() error
}
