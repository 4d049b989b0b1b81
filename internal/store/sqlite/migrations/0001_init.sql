-- Bedside schema, version 1. Times are Unix milliseconds, UTC.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'clinician', 'staff')),
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE sessions (
    id_hash      BLOB PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE visits (
    id              TEXT PRIMARY KEY,
    clinician_id    TEXT NOT NULL REFERENCES users(id),
    patient_name    TEXT NOT NULL DEFAULT '',
    scheduled_at    INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    link_hash       BLOB NOT NULL UNIQUE,
    link_expires_at INTEGER NOT NULL,
    revoked_at      INTEGER,
    state           TEXT NOT NULL,
    ended_at        INTEGER
);
CREATE INDEX visits_scheduled ON visits(scheduled_at);
CREATE INDEX visits_clinician ON visits(clinician_id, scheduled_at);

CREATE TABLE participants (
    id              TEXT PRIMARY KEY,
    visit_id        TEXT NOT NULL REFERENCES visits(id) ON DELETE CASCADE,
    role            TEXT NOT NULL,
    user_id         TEXT NOT NULL DEFAULT '',
    name            TEXT NOT NULL DEFAULT '',
    credential_hash BLOB,
    created_at      INTEGER NOT NULL,
    admitted_at     INTEGER,
    left_at         INTEGER
);
CREATE INDEX participants_visit ON participants(visit_id);
