// Package sqlite is the embedded, default Store: one SQLite file under the data directory,
// through modernc.org/sqlite (pure Go, so the binary needs no cgo). Migrations are numbered
// SQL files embedded in the binary and applied in order at Open.
//
// Patient fields (visits.patient_name, participants.name) and TOTP secrets are encrypted
// with AES-256-GCM under the application key (the data key file), bound to their row, so a
// copy of the database alone reveals no patient name.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bedside/bedside/internal/store"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a store.Store on an SQLite database.
type Store struct {
	db         *sql.DB
	seal       *sealer
	keyCreated bool
}

var _ store.Store = (*Store)(nil)

// Options adjust Open.
type Options struct {
	// DataKeyFile holds the application key (default <dir>/data.key). It is made on first
	// open with mode 0600; a file others can read is refused.
	DataKeyFile string
}

// Open opens (creating if needed) the database bedside.db in dir and brings its schema up to
// date. The directory is created with mode 0700: it holds patient data.
func Open(ctx context.Context, dir string) (*Store, error) {
	return OpenWith(ctx, dir, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, dir string, opt Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if opt.DataKeyFile == "" {
		opt.DataKeyFile = filepath.Join(dir, "data.key")
	}
	seal, created, err := loadSealer(opt.DataKeyFile)
	if err != nil {
		return nil, fmt.Errorf("data-key-file: %w", err)
	}
	path := filepath.Join(dir, "bedside.db")
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	s := &Store{db: db, seal: seal, keyCreated: created}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("database file mode: %w", err)
	}
	if err := s.encryptLegacy(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// KeyCreated reports whether Open made a new data key (the first start).
func (s *Store) KeyCreated() bool { return s.keyCreated }

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("migrations table: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		var version int
		if _, err := fmt.Sscanf(filepath.Base(name), "%04d_", &version); err != nil {
			return fmt.Errorf("migration %s: bad name", name)
		}
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
			return fmt.Errorf("migration %d: %w", version, err)
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migration %d: %w", version, err)
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", version, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, version, ms(time.Now())); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", version, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", version, err)
		}
	}
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func nullMS(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMilli(), Valid: true}
}

func fromNullMS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMS(v.Int64)
	return &t
}

// isUnique reports whether err is a UNIQUE or PRIMARY KEY constraint violation.
func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// isForeignKey reports whether err is a FOREIGN KEY constraint violation.
func isForeignKey(err error) bool {
	return err != nil && strings.Contains(err.Error(), "FOREIGN KEY constraint failed")
}

// one checks that an UPDATE or DELETE touched a row.
func one(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// Users

func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO users (id, email, name, role, password_hash, disabled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		u.ID, u.Email, u.Name, string(u.Role), u.PasswordHash, u.Disabled, ms(u.CreatedAt))
	if isUnique(err) {
		return store.ErrConflict
	}
	return err
}

const userCols = `id, email, name, role, password_hash, disabled, created_at`

func scanUser(row scanner) (store.User, error) {
	var u store.User
	var role string
	var created int64
	err := row.Scan(&u.ID, &u.Email, &u.Name, &role, &u.PasswordHash, &u.Disabled, &created)
	u.Role = store.Role(role)
	u.CreatedAt = fromMS(created)
	return u, notFound(err)
}

func (s *Store) UserByID(ctx context.Context, id string) (store.User, error) {
	return scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
}

func (s *Store) UserByEmail(ctx context.Context, email string) (store.User, error) {
	return scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE email = ?`, email))
}

func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	return queryAll(ctx, s.db, scanUser, `SELECT `+userCols+` FROM users ORDER BY email`)
}

func (s *Store) SetUserDisabled(ctx context.Context, id string, disabled bool) error {
	return one(s.db.ExecContext(ctx, `UPDATE users SET disabled = ? WHERE id = ?`, disabled, id))
}

// Sessions

func (s *Store) CreateSession(ctx context.Context, x store.Session) error {
	stage := x.Stage
	if stage == "" {
		stage = "full"
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at, stage, challenge) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		x.IDHash, x.UserID, ms(x.CreatedAt), ms(x.LastSeenAt), ms(x.ExpiresAt), stage, x.Challenge)
	if isUnique(err) {
		return store.ErrConflict
	}
	return err
}

func (s *Store) SessionByHash(ctx context.Context, idHash []byte) (store.Session, error) {
	var x store.Session
	var created, seen, expires int64
	err := s.db.QueryRowContext(ctx, `SELECT id_hash, user_id, created_at, last_seen_at, expires_at, stage, challenge FROM sessions WHERE id_hash = ?`, idHash).
		Scan(&x.IDHash, &x.UserID, &created, &seen, &expires, &x.Stage, &x.Challenge)
	x.CreatedAt, x.LastSeenAt, x.ExpiresAt = fromMS(created), fromMS(seen), fromMS(expires)
	return x, notFound(err)
}

func (s *Store) TouchSession(ctx context.Context, idHash []byte, at time.Time) error {
	return one(s.db.ExecContext(ctx, `UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?`, ms(at), idHash))
}

func (s *Store) DeleteSession(ctx context.Context, idHash []byte) error {
	return one(s.db.ExecContext(ctx, `DELETE FROM sessions WHERE id_hash = ?`, idHash))
}

func (s *Store) SetSessionChallenge(ctx context.Context, idHash []byte, challenge []byte) error {
	return one(s.db.ExecContext(ctx, `UPDATE sessions SET challenge = ? WHERE id_hash = ?`, challenge, idHash))
}

func (s *Store) CountUserSessions(ctx context.Context, userID string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sessions WHERE user_id = ?`, userID).Scan(&n)
	return n, err
}

func (s *Store) DeleteUserSessions(ctx context.Context, userID string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ?`, userID)
	return err
}

func (s *Store) DeleteExpiredSessions(ctx context.Context, now time.Time, idle time.Duration) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at <= ?`, ms(now), ms(now.Add(-idle)))
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// Visits

func (s *Store) CreateVisit(ctx context.Context, v store.Visit) error {
	policy := v.Policy
	if policy == "" {
		policy = store.PolicyAuto
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO visits (id, clinician_id, patient_name, scheduled_at, created_at, link_hash, link_expires_at, revoked_at, state, ended_at, privacy, media_policy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		v.ID, v.ClinicianID, s.seal.seal(v.PatientName, "visits.patient_name", v.ID), ms(v.ScheduledAt), ms(v.CreatedAt), v.LinkHash, ms(v.LinkExpiresAt), nullMS(v.RevokedAt), string(v.State), nullMS(v.EndedAt), v.Privacy, string(policy))
	if isUnique(err) {
		return store.ErrConflict
	}
	return err
}

const visitCols = `id, clinician_id, patient_name, scheduled_at, created_at, link_hash, link_expires_at, revoked_at, state, ended_at, privacy, media_policy`

func (s *Store) scanVisit(row scanner) (store.Visit, error) {
	var v store.Visit
	var scheduled, created, expires int64
	var revoked, ended sql.NullInt64
	var state, policy string
	err := row.Scan(&v.ID, &v.ClinicianID, &v.PatientName, &scheduled, &created, &v.LinkHash, &expires, &revoked, &state, &ended, &v.Privacy, &policy)
	v.Policy = store.MediaPolicy(policy)
	v.ScheduledAt, v.CreatedAt, v.LinkExpiresAt = fromMS(scheduled), fromMS(created), fromMS(expires)
	v.RevokedAt, v.EndedAt = fromNullMS(revoked), fromNullMS(ended)
	v.State = store.VisitState(state)
	if err == nil {
		if v.PatientName, err = s.seal.open(v.PatientName, "visits.patient_name", v.ID); err != nil {
			return v, err
		}
	}
	return v, notFound(err)
}

func (s *Store) VisitByID(ctx context.Context, id string) (store.Visit, error) {
	return s.scanVisit(s.db.QueryRowContext(ctx, `SELECT `+visitCols+` FROM visits WHERE id = ?`, id))
}

func (s *Store) VisitByLinkHash(ctx context.Context, linkHash []byte) (store.Visit, error) {
	return s.scanVisit(s.db.QueryRowContext(ctx, `SELECT `+visitCols+` FROM visits WHERE link_hash = ?`, linkHash))
}

func (s *Store) ListVisits(ctx context.Context, clinicianID string, from, to time.Time) ([]store.Visit, error) {
	q := `SELECT ` + visitCols + ` FROM visits WHERE scheduled_at >= ? AND scheduled_at < ?`
	args := []any{ms(from), ms(to)}
	if clinicianID != "" {
		q += ` AND clinician_id = ?`
		args = append(args, clinicianID)
	}
	return queryAll(ctx, s.db, s.scanVisit, q+` ORDER BY scheduled_at, id`, args...)
}

func (s *Store) SetVisitLink(ctx context.Context, id string, linkHash []byte, expiresAt time.Time) error {
	return one(s.db.ExecContext(ctx, `UPDATE visits SET link_hash = ?, link_expires_at = ?, revoked_at = NULL WHERE id = ?`, linkHash, ms(expiresAt), id))
}

func (s *Store) SetVisitState(ctx context.Context, id string, state store.VisitState) error {
	// An ended visit stays ended.
	return one(s.db.ExecContext(ctx, `UPDATE visits SET state = CASE WHEN state = 'ended' THEN state ELSE ? END WHERE id = ?`, string(state), id))
}

func (s *Store) RevokeVisit(ctx context.Context, id string, at time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := one(tx.ExecContext(ctx, `UPDATE visits SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, ms(at), id)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE guest_links SET revoked_at = COALESCE(revoked_at, ?) WHERE visit_id = ?`, ms(at), id); err != nil {
		return err
	}
	return tx.Commit()
}

// Guest links

func (s *Store) CreateGuestLink(ctx context.Context, g store.GuestLink) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO guest_links (id, visit_id, role, link_hash, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		g.ID, g.VisitID, string(g.Role), g.LinkHash, ms(g.CreatedAt), ms(g.ExpiresAt), nullMS(g.RevokedAt))
	if isUnique(err) {
		return store.ErrConflict
	}
	if isForeignKey(err) {
		return store.ErrNotFound
	}
	return err
}

const guestCols = `id, visit_id, role, link_hash, created_at, expires_at, revoked_at`

func scanGuestLink(row scanner) (store.GuestLink, error) {
	var g store.GuestLink
	var role string
	var created, expires int64
	var revoked sql.NullInt64
	err := row.Scan(&g.ID, &g.VisitID, &role, &g.LinkHash, &created, &expires, &revoked)
	g.Role, g.CreatedAt, g.ExpiresAt, g.RevokedAt = store.GuestRole(role), fromMS(created), fromMS(expires), fromNullMS(revoked)
	return g, notFound(err)
}

func (s *Store) GuestLinkByHash(ctx context.Context, linkHash []byte) (store.GuestLink, error) {
	return scanGuestLink(s.db.QueryRowContext(ctx, `SELECT `+guestCols+` FROM guest_links WHERE link_hash = ?`, linkHash))
}

func (s *Store) VisitGuestLinks(ctx context.Context, visitID string) ([]store.GuestLink, error) {
	return queryAll(ctx, s.db, scanGuestLink, `SELECT `+guestCols+` FROM guest_links WHERE visit_id = ? ORDER BY created_at, id`, visitID)
}

func (s *Store) EndVisit(ctx context.Context, id string, at time.Time) error {
	return one(s.db.ExecContext(ctx, `UPDATE visits SET state = 'ended', ended_at = COALESCE(ended_at, ?) WHERE id = ?`, ms(at), id))
}

// Participants

func (s *Store) CreateParticipant(ctx context.Context, p store.Participant) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO participants (id, visit_id, role, user_id, name, credential_hash, created_at, admitted_at, left_at, removed_at, guest_link_id, observer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.VisitID, string(p.Role), p.UserID, s.seal.seal(p.Name, "participants.name", p.ID), p.CredentialHash, ms(p.CreatedAt), nullMS(p.AdmittedAt), nullMS(p.LeftAt), nullMS(p.RemovedAt), p.GuestLinkID, p.Observer)
	if isUnique(err) {
		return store.ErrConflict
	}
	return err
}

const participantCols = `id, visit_id, role, user_id, name, credential_hash, created_at, admitted_at, left_at, removed_at, guest_link_id, observer`

func (s *Store) scanParticipant(row scanner) (store.Participant, error) {
	var p store.Participant
	var role string
	var created int64
	var admitted, left, removed sql.NullInt64
	err := row.Scan(&p.ID, &p.VisitID, &role, &p.UserID, &p.Name, &p.CredentialHash, &created, &admitted, &left, &removed, &p.GuestLinkID, &p.Observer)
	p.Role = store.Role(role)
	p.CreatedAt = fromMS(created)
	p.AdmittedAt, p.LeftAt, p.RemovedAt = fromNullMS(admitted), fromNullMS(left), fromNullMS(removed)
	if err == nil {
		if p.Name, err = s.seal.open(p.Name, "participants.name", p.ID); err != nil {
			return p, err
		}
	}
	return p, notFound(err)
}

func (s *Store) ParticipantByID(ctx context.Context, id string) (store.Participant, error) {
	return s.scanParticipant(s.db.QueryRowContext(ctx, `SELECT `+participantCols+` FROM participants WHERE id = ?`, id))
}

func (s *Store) VisitParticipants(ctx context.Context, visitID string) ([]store.Participant, error) {
	return queryAll(ctx, s.db, s.scanParticipant, `SELECT `+participantCols+` FROM participants WHERE visit_id = ? ORDER BY created_at, id`, visitID)
}

func (s *Store) AdmitParticipant(ctx context.Context, id string, at time.Time) error {
	return one(s.db.ExecContext(ctx, `UPDATE participants SET admitted_at = COALESCE(admitted_at, ?) WHERE id = ?`, ms(at), id))
}

func (s *Store) SetParticipantLeft(ctx context.Context, id string, at time.Time) error {
	return one(s.db.ExecContext(ctx, `UPDATE participants SET left_at = ? WHERE id = ?`, ms(at), id))
}

func (s *Store) RemoveParticipant(ctx context.Context, id string, at time.Time) error {
	return one(s.db.ExecContext(ctx, `UPDATE participants SET removed_at = COALESCE(removed_at, ?) WHERE id = ?`, ms(at), id))
}

func (s *Store) RecentDepartures(ctx context.Context, since time.Time) (participants, visits []string, err error) {
	t := ms(since)
	if participants, err = s.column(ctx, `SELECT id FROM participants WHERE left_at >= ? OR removed_at >= ?
		UNION SELECT p.id FROM participants p JOIN visits v ON v.id = p.visit_id WHERE v.ended_at >= ? OR (v.revoked_at >= ? AND p.user_id = '')
		ORDER BY 1`, t, t, t, t); err != nil {
		return nil, nil, err
	}
	if visits, err = s.column(ctx, `SELECT id FROM visits WHERE ended_at >= ? OR revoked_at >= ? ORDER BY id`, t, t); err != nil {
		return nil, nil, err
	}
	return participants, visits, nil
}

// column runs a query of one text column.
func (s *Store) column(ctx context.Context, query string, args ...any) ([]string, error) {
	return queryAll(ctx, s.db, func(row scanner) (v string, err error) {
		err = row.Scan(&v)
		return v, err
	}, query, args...)
}

// scanner is a row to read: an *sql.Row or the current row of an *sql.Rows (an alias, so
// that the scan functions written with the literal type are queryAll's scan).
type scanner = interface{ Scan(...any) error }

// queryAll runs a query and reads every row it returns with scan, in order.
func queryAll[T any](ctx context.Context, db *sql.DB, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func (s *Store) SetParticipantName(ctx context.Context, id, name string) error {
	return one(s.db.ExecContext(ctx, `UPDATE participants SET name = ? WHERE id = ?`, s.seal.seal(name, "participants.name", id), id))
}
