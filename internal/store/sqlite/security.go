package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/bedside/bedside/internal/store"
)

// Second factors

func (s *Store) PutTOTP(ctx context.Context, t store.TOTP) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO mfa_totp (user_id, secret, confirmed_at, last_step, created_at) VALUES (?, ?, NULL, 0, ?)
		ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, confirmed_at = NULL, last_step = 0, created_at = excluded.created_at`,
		t.UserID, s.seal.seal(t.Secret, "mfa_totp.secret", t.UserID), ms(t.CreatedAt))
	return err
}

func (s *Store) TOTPByUser(ctx context.Context, userID string) (store.TOTP, error) {
	var t store.TOTP
	var confirmed sql.NullInt64
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT user_id, secret, confirmed_at, last_step, created_at FROM mfa_totp WHERE user_id = ?`, userID).
		Scan(&t.UserID, &t.Secret, &confirmed, &t.LastStep, &created)
	if err != nil {
		return t, notFound(err)
	}
	t.ConfirmedAt, t.CreatedAt = fromNullMS(confirmed), fromMS(created)
	t.Secret, err = s.seal.open(t.Secret, "mfa_totp.secret", t.UserID)
	return t, err
}

func (s *Store) ConfirmTOTP(ctx context.Context, userID string, at time.Time, step int64) error {
	return one(s.db.ExecContext(ctx, `UPDATE mfa_totp SET confirmed_at = ?, last_step = ? WHERE user_id = ? AND confirmed_at IS NULL AND last_step < ?`, ms(at), step, userID, step))
}

func (s *Store) UseTOTPStep(ctx context.Context, userID string, step int64) error {
	err := one(s.db.ExecContext(ctx, `UPDATE mfa_totp SET last_step = ? WHERE user_id = ? AND confirmed_at IS NOT NULL AND last_step < ?`, step, userID, step))
	if errors.Is(err, store.ErrNotFound) {
		return store.ErrConflict // used already (or a later code was)
	}
	return err
}

func (s *Store) DeleteTOTP(ctx context.Context, userID string) error {
	return one(s.db.ExecContext(ctx, `DELETE FROM mfa_totp WHERE user_id = ?`, userID))
}

func (s *Store) SetRecoveryCodes(ctx context.Context, userID string, hashes [][]byte) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM mfa_recovery WHERE user_id = ?`, userID); err != nil {
		return err
	}
	for _, h := range hashes {
		if _, err := tx.ExecContext(ctx, `INSERT INTO mfa_recovery (user_id, code_hash) VALUES (?, ?)`, userID, h); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *Store) UseRecoveryCode(ctx context.Context, userID string, hash []byte, at time.Time) error {
	return one(s.db.ExecContext(ctx, `UPDATE mfa_recovery SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL`, ms(at), userID, hash))
}

func (s *Store) RecoveryCodesLeft(ctx context.Context, userID string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM mfa_recovery WHERE user_id = ? AND used_at IS NULL`, userID).Scan(&n)
	return n, err
}

func (s *Store) CreatePasskey(ctx context.Context, p store.Passkey) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO mfa_passkeys (id, user_id, credential_id, credential, name, created_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.UserID, p.CredentialID, string(p.Credential), p.Name, ms(p.CreatedAt), nullMS(p.LastUsedAt))
	if isUnique(err) {
		return store.ErrConflict
	}
	return err
}

func (s *Store) UserPasskeys(ctx context.Context, userID string) ([]store.Passkey, error) {
	return queryAll(ctx, s.db, func(row scanner) (p store.Passkey, err error) {
		var cred string
		var created int64
		var used sql.NullInt64
		err = row.Scan(&p.ID, &p.UserID, &p.CredentialID, &cred, &p.Name, &created, &used)
		p.Credential, p.CreatedAt, p.LastUsedAt = []byte(cred), fromMS(created), fromNullMS(used)
		return p, err
	}, `SELECT id, user_id, credential_id, credential, name, created_at, last_used_at FROM mfa_passkeys WHERE user_id = ? ORDER BY created_at, id`, userID)
}

func (s *Store) UpdatePasskey(ctx context.Context, id string, credential []byte, usedAt time.Time) error {
	return one(s.db.ExecContext(ctx, `UPDATE mfa_passkeys SET credential = ?, last_used_at = ? WHERE id = ?`, string(credential), ms(usedAt), id))
}

func (s *Store) DeletePasskey(ctx context.Context, userID, id string) error {
	return one(s.db.ExecContext(ctx, `DELETE FROM mfa_passkeys WHERE id = ? AND user_id = ?`, id, userID))
}

func (s *Store) DeleteSecondFactors(ctx context.Context, userID string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{`DELETE FROM mfa_totp WHERE user_id = ?`, `DELETE FROM mfa_recovery WHERE user_id = ?`, `DELETE FROM mfa_passkeys WHERE user_id = ?`} {
		if _, err := tx.ExecContext(ctx, q, userID); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Lockouts

func (s *Store) RecordFailure(ctx context.Context, key string, now time.Time, window time.Duration, max int, lockFor time.Duration) (time.Time, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return time.Time{}, err
	}
	defer tx.Rollback()
	var failures int
	var start, until int64
	err = tx.QueryRowContext(ctx, `SELECT failures, window_start, locked_until FROM lockouts WHERE key = ?`, key).Scan(&failures, &start, &until)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		failures, start, until = 0, ms(now), 0
	case err != nil:
		return time.Time{}, err
	}
	if ms(now)-start >= window.Milliseconds() {
		failures, start = 0, ms(now) // a new window
	}
	failures++
	if failures >= max {
		until = ms(now.Add(lockFor))
		failures, start = 0, ms(now) // the lock is the consequence; counting starts again after it
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO lockouts (key, failures, window_start, locked_until) VALUES (?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, window_start = excluded.window_start, locked_until = excluded.locked_until`,
		key, failures, start, until); err != nil {
		return time.Time{}, err
	}
	if err := tx.Commit(); err != nil {
		return time.Time{}, err
	}
	if until > ms(now) {
		return fromMS(until), nil
	}
	return time.Time{}, nil
}

func (s *Store) LockedUntil(ctx context.Context, key string) (time.Time, error) {
	var until int64
	err := s.db.QueryRowContext(ctx, `SELECT locked_until FROM lockouts WHERE key = ?`, key).Scan(&until)
	if errors.Is(err, sql.ErrNoRows) || until == 0 {
		return time.Time{}, nil
	}
	return fromMS(until), err
}

func (s *Store) ClearFailures(ctx context.Context, key string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM lockouts WHERE key = ?`, key)
	return err
}

// Break-glass

func (s *Store) CreateBreakGlass(ctx context.Context, b store.BreakGlass) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO break_glass (id, user_id, granted_by, reason, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		b.ID, b.UserID, b.GrantedBy, b.Reason, ms(b.CreatedAt), ms(b.ExpiresAt), nullMS(b.RevokedAt))
	return err
}

func (s *Store) BreakGlassGrants(ctx context.Context, userID string, since time.Time) ([]store.BreakGlass, error) {
	q := `SELECT id, user_id, granted_by, reason, created_at, expires_at, revoked_at FROM break_glass WHERE expires_at > ?`
	args := []any{ms(since)}
	if userID != "" {
		q += ` AND user_id = ?`
		args = append(args, userID)
	}
	return queryAll(ctx, s.db, func(row scanner) (b store.BreakGlass, err error) {
		var created, expires int64
		var revoked sql.NullInt64
		err = row.Scan(&b.ID, &b.UserID, &b.GrantedBy, &b.Reason, &created, &expires, &revoked)
		b.CreatedAt, b.ExpiresAt, b.RevokedAt = fromMS(created), fromMS(expires), fromNullMS(revoked)
		return b, err
	}, q+` ORDER BY created_at DESC, id`, args...)
}

func (s *Store) RevokeBreakGlass(ctx context.Context, userID string, at time.Time) (int, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE break_glass SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?`, ms(at), userID, ms(at))
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// Retention

func (s *Store) DeleteVisitsBefore(ctx context.Context, t time.Time) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM visits WHERE scheduled_at < ? AND (state = 'ended' OR link_expires_at < ?)`, ms(t), ms(t))
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}
