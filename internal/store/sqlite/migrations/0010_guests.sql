-- Guests: a caregiver, interpreter or specialist invited to a visit by a link of their own.
-- Like the patient link, only the SHA-256 of the token is kept. A guest link expires with
-- the visit's link at the time of the invitation and is revoked with the visit (revoking
-- the visit stamps revoked_at here too, and a new patient link does not bring it back).
CREATE TABLE guest_links (
    id         TEXT PRIMARY KEY,
    visit_id   TEXT NOT NULL REFERENCES visits(id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('participant', 'observer')),
    link_hash  BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX guest_links_visit ON guest_links(visit_id);

-- Which guest link a participant came through ('' for the patient link and for accounts),
-- and whether it may only watch and listen (an observer publishes nothing).
ALTER TABLE participants ADD COLUMN guest_link_id TEXT NOT NULL DEFAULT '';
ALTER TABLE participants ADD COLUMN observer INTEGER NOT NULL DEFAULT 0;
