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
}

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
}

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

	CreateVisit(ctx context.Context, v Visit) error
	VisitByID(ctx context.Context, id string) (Visit, error)
	VisitByLinkHash(ctx context.Context, linkHash []byte) (Visit, error)
	// ListVisits returns visits scheduled in [from, to), optionally of one clinician
	// (clinicianID "" = all), ordered by scheduled time.
	ListVisits(ctx context.Context, clinicianID string, from, to time.Time) ([]Visit, error)
	SetVisitLink(ctx context.Context, id string, linkHash []byte, expiresAt time.Time) error
	SetVisitState(ctx context.Context, id string, state VisitState) error
	RevokeVisit(ctx context.Context, id string, at time.Time) error
	EndVisit(ctx context.Context, id string, at time.Time) error

	CreateParticipant(ctx context.Context, p Participant) error
	ParticipantByID(ctx context.Context, id string) (Participant, error)
	VisitParticipants(ctx context.Context, visitID string) ([]Participant, error)
	AdmitParticipant(ctx context.Context, id string, at time.Time) error
	SetParticipantLeft(ctx context.Context, id string, at time.Time) error
	RemoveParticipant(ctx context.Context, id string, at time.Time) error
	SetParticipantName(ctx context.Context, id, name string) error

	// The audit trail (internal/audit): append-only, hash-chained rows.
	AppendAudit(ctx context.Context, e audit.Event, link func(prev []byte, seq int64) []byte) (audit.Entry, error)
	AuditEntries(ctx context.Context, afterSeq int64, limit int) ([]audit.Entry, error)
	AuditHead(ctx context.Context) (size int64, hash []byte, err error)
	SearchAudit(ctx context.Context, q audit.Query) ([]audit.Entry, error)

	Ping(ctx context.Context) error
	Close() error
}
