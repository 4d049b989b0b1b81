-- Break-glass: time-limited emergency access of a clinician to every visit, granted by an
-- admin with a reason. Rows are kept after they end (the audit trail has them too).
CREATE TABLE break_glass (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    granted_by TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX break_glass_user ON break_glass(user_id, expires_at);
