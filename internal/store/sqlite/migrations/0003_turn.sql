-- The TURN relay issue: privacy mode per visit (relay-only ICE), and the selected ICE
-- candidate pair each participant reported towards each peer (no addresses: only what kind
-- of path it was).
ALTER TABLE visits ADD COLUMN privacy INTEGER NOT NULL DEFAULT 0;

CREATE TABLE connections (
    participant_id       TEXT NOT NULL REFERENCES participants(id) ON DELETE CASCADE,
    peer_id              TEXT NOT NULL,
    visit_id             TEXT NOT NULL REFERENCES visits(id) ON DELETE CASCADE,
    local_type           TEXT NOT NULL,
    local_protocol       TEXT NOT NULL,
    local_relay_protocol TEXT NOT NULL DEFAULT '',
    remote_type          TEXT NOT NULL,
    remote_protocol      TEXT NOT NULL,
    first_at             INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    changes              INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (participant_id, peer_id)
);
CREATE INDEX connections_visit ON connections(visit_id);
