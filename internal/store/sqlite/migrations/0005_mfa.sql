-- Second factors (TOTP, recovery codes, passkeys) and sessions part-way through sign-in.
-- A session's stage: 'full' (signed in), 'mfa' (password accepted, second factor due),
-- 'enroll' (password accepted, a second factor must be set up first).
ALTER TABLE sessions ADD COLUMN stage TEXT NOT NULL DEFAULT 'full';
-- A WebAuthn ceremony in progress on this session (its challenge), JSON.
ALTER TABLE sessions ADD COLUMN challenge BLOB;

CREATE TABLE mfa_totp (
    user_id      TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret       TEXT NOT NULL,           -- encrypted with the data key
    confirmed_at INTEGER,                 -- NULL until the first code is entered
    last_step    INTEGER NOT NULL DEFAULT 0, -- the last 30 s time step used: codes are single-use
    created_at   INTEGER NOT NULL
);

CREATE TABLE mfa_recovery (
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash BLOB NOT NULL,              -- SHA-256 of the normalized code
    used_at   INTEGER,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE mfa_passkeys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_id BLOB NOT NULL UNIQUE,
    credential    TEXT NOT NULL,          -- the WebAuthn credential (public key, counters), JSON
    name          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX mfa_passkeys_user ON mfa_passkeys(user_id);
