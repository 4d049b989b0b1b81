package audit

import (
	"encoding/hex"
	"time"
)

// JSONEntry is a row as exports and the admin API show it: the event, and the chain fields
// in hex so that a recipient can check that an exported range links up.
type JSONEntry struct {
	Seq       int64             `json:"seq"`
	Time      time.Time         `json:"time"`
	Action    string            `json:"action"`
	ActorID   string            `json:"actor_id,omitempty"`
	ActorRole string            `json:"actor_role,omitempty"`
	VisitID   string            `json:"visit_id,omitempty"`
	SubjectID string            `json:"subject_id,omitempty"`
	Addr      string            `json:"addr,omitempty"`
	UserAgent string            `json:"user_agent,omitempty"`
	Outcome   string            `json:"outcome"`
	Detail    map[string]string `json:"detail,omitempty"`
	PrevHash  string            `json:"prev_hash"`
	Hash      string            `json:"hash"`
}

// ToJSON returns the JSON form of an entry.
func (en Entry) ToJSON() JSONEntry {
	return JSONEntry{
		Seq: en.Seq, Time: en.Time.UTC(), Action: string(en.Action), ActorID: en.ActorID, ActorRole: en.ActorRole,
		VisitID: en.VisitID, SubjectID: en.SubjectID, Addr: en.Addr, UserAgent: en.UserAgent, Outcome: en.Outcome,
		Detail: en.Detail, PrevHash: hex.EncodeToString(en.PrevHash), Hash: hex.EncodeToString(en.Hash),
	}
}
