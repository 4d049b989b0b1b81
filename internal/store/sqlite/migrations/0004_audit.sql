-- The tamper-evident audit trail (internal/audit): one row per event, numbered without gaps,
-- each row's hash covering its contents and the row before. Never updated or deleted by
-- Bedside (retention keeps it); the triggers make an accidental change fail loudly, and
-- `bedside audit verify` catches a deliberate one.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    action     TEXT NOT NULL,
    actor_id   TEXT NOT NULL DEFAULT '',
    actor_role TEXT NOT NULL DEFAULT '',
    visit_id   TEXT NOT NULL DEFAULT '',
    subject_id TEXT NOT NULL DEFAULT '',
    addr       TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    outcome    TEXT NOT NULL DEFAULT '',
    detail     TEXT NOT NULL DEFAULT '{}',
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
);
CREATE INDEX audit_at ON audit_log(at);
CREATE INDEX audit_visit ON audit_log(visit_id, seq) WHERE visit_id != '';
CREATE INDEX audit_actor ON audit_log(actor_id, seq) WHERE actor_id != '';
CREATE INDEX audit_subject ON audit_log(subject_id, seq) WHERE subject_id != '';

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
