package sqlite

import (
	"context"

	"github.com/bedside/bedside/internal/store"
)

// SetConnection records a participant's selected candidate pair towards a peer.
func (s *Store) SetConnection(ctx context.Context, c store.Connection) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO connections (participant_id, peer_id, visit_id, local_type, local_protocol,
		local_relay_protocol, remote_type, remote_protocol, first_at, updated_at, changes)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)
		ON CONFLICT (participant_id, peer_id) DO UPDATE SET
			changes = changes + CASE WHEN local_type = excluded.local_type AND local_protocol = excluded.local_protocol
				AND local_relay_protocol = excluded.local_relay_protocol AND remote_type = excluded.remote_type
				AND remote_protocol = excluded.remote_protocol THEN 0 ELSE 1 END,
			local_type = excluded.local_type, local_protocol = excluded.local_protocol,
			local_relay_protocol = excluded.local_relay_protocol, remote_type = excluded.remote_type,
			remote_protocol = excluded.remote_protocol, updated_at = excluded.updated_at`,
		c.ParticipantID, c.PeerID, c.VisitID, c.Local.Type, c.Local.Protocol, c.Local.RelayProtocol,
		c.Remote.Type, c.Remote.Protocol, ms(c.UpdatedAt), ms(c.UpdatedAt))
	if isForeignKey(err) {
		return store.ErrNotFound
	}
	return err
}

// VisitConnections returns every pair reported in a visit, by participant and peer.
func (s *Store) VisitConnections(ctx context.Context, visitID string) ([]store.Connection, error) {
	return queryAll(ctx, s.db, func(row scanner) (c store.Connection, err error) {
		var first, updated int64
		err = row.Scan(&c.ParticipantID, &c.PeerID, &c.VisitID, &c.Local.Type, &c.Local.Protocol, &c.Local.RelayProtocol,
			&c.Remote.Type, &c.Remote.Protocol, &first, &updated, &c.Changes)
		c.FirstAt, c.UpdatedAt = fromMS(first), fromMS(updated)
		return c, err
	}, `SELECT participant_id, peer_id, visit_id, local_type, local_protocol, local_relay_protocol,
		remote_type, remote_protocol, first_at, updated_at, changes FROM connections WHERE visit_id = ? ORDER BY participant_id, peer_id`, visitID)
}
