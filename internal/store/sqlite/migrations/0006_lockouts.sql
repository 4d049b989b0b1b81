-- Failed attempts and lockouts (sign-in, second factor, visit links), kept in the database so
-- that a restart does not reset them. key names the scope: signin:acct:..., signin:addr:...,
-- mfa:acct:..., link:addr:..., link:visit:...
CREATE TABLE lockouts (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0
);
