package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bedside/bedside/internal/audit"
)

// AppendAudit appends one row to the audit trail, in one write transaction with the read of
// the last row, so rows from several processes (the server, the CLI) chain in order.
func (s *Store) AppendAudit(ctx context.Context, e audit.Event, link func(prev []byte, seq int64) []byte) (audit.Entry, error) {
	detail := []byte("{}")
	if len(e.Detail) > 0 {
		var err error
		if detail, err = json.Marshal(e.Detail); err != nil {
			return audit.Entry{}, err
		}
	}
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock): the write lock first
	if err != nil {
		return audit.Entry{}, fmt.Errorf("audit append: %w", err)
	}
	defer tx.Rollback()
	var seq int64
	var prev []byte
	err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&seq, &prev)
	if errors.Is(err, sql.ErrNoRows) {
		seq, prev, err = 0, audit.Genesis, nil
	}
	if err != nil {
		return audit.Entry{}, fmt.Errorf("audit append: %w", err)
	}
	en := audit.Entry{Seq: seq + 1, Event: e, PrevHash: prev}
	en.Hash = link(prev, en.Seq)
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_log (seq, at, action, actor_id, actor_role, visit_id, subject_id, addr, user_agent, outcome, detail, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		en.Seq, ms(e.Time), string(e.Action), e.ActorID, e.ActorRole, e.VisitID, e.SubjectID, e.Addr, e.UserAgent, e.Outcome, string(detail), en.PrevHash, en.Hash)
	if err != nil {
		return audit.Entry{}, fmt.Errorf("audit append: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return audit.Entry{}, fmt.Errorf("audit append: %w", err)
	}
	return en, nil
}

const auditCols = `seq, at, action, actor_id, actor_role, visit_id, subject_id, addr, user_agent, outcome, detail, prev_hash, hash`

func scanAudit(row scanner) (audit.Entry, error) {
	var en audit.Entry
	var at int64
	var action, detail string
	err := row.Scan(&en.Seq, &at, &action, &en.ActorID, &en.ActorRole, &en.VisitID, &en.SubjectID, &en.Addr, &en.UserAgent, &en.Outcome, &detail, &en.PrevHash, &en.Hash)
	if err != nil {
		return en, notFound(err)
	}
	en.Time, en.Action = fromMS(at), audit.Action(action)
	if detail != "{}" && detail != "" {
		if err := json.Unmarshal([]byte(detail), &en.Detail); err != nil {
			// A row whose detail was damaged still reads: verification reports it.
			en.Detail = map[string]string{"<unreadable>": detail}
		}
	}
	return en, nil
}

func (s *Store) auditRows(ctx context.Context, q string, args ...any) ([]audit.Entry, error) {
	return queryAll(ctx, s.db, scanAudit, q, args...)
}

// AuditEntries returns up to limit rows after afterSeq, in order.
func (s *Store) AuditEntries(ctx context.Context, afterSeq int64, limit int) ([]audit.Entry, error) {
	return s.auditRows(ctx, `SELECT `+auditCols+` FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?`, afterSeq, limit)
}

// AuditHead returns the number of the last row and its hash (0 and Genesis when empty).
func (s *Store) AuditHead(ctx context.Context) (int64, []byte, error) {
	var seq int64
	var h []byte
	err := s.db.QueryRowContext(ctx, `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&seq, &h)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, audit.Genesis, nil
	}
	return seq, h, err
}

// SearchAudit returns the rows matching q, newest first.
func (s *Store) SearchAudit(ctx context.Context, q audit.Query) ([]audit.Entry, error) {
	var where []string
	var args []any
	if q.VisitID != "" {
		where, args = append(where, "visit_id = ?"), append(args, q.VisitID)
	}
	if q.UserID != "" {
		where, args = append(where, "(actor_id = ? OR subject_id = ?)"), append(args, q.UserID, q.UserID)
	}
	if q.Action != "" {
		where, args = append(where, "action = ?"), append(args, string(q.Action))
	}
	if !q.From.IsZero() {
		where, args = append(where, "at >= ?"), append(args, ms(q.From))
	}
	if !q.To.IsZero() {
		where, args = append(where, "at < ?"), append(args, ms(q.To))
	}
	if q.BeforeSeq > 0 {
		where, args = append(where, "seq < ?"), append(args, q.BeforeSeq)
	}
	sqlq := `SELECT ` + auditCols + ` FROM audit_log`
	if len(where) > 0 {
		sqlq += ` WHERE ` + strings.Join(where, " AND ")
	}
	limit := q.Limit
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	return s.auditRows(ctx, sqlq+` ORDER BY seq DESC LIMIT ?`, append(args, limit)...)
}
