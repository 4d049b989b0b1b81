package audit

import (
	"bytes"
	"context"
	"fmt"
	"time"
)

// Entries is what verification and export read: rows in sequence order after afterSeq, at
// most limit of them.
type Entries interface {
	AuditEntries(ctx context.Context, afterSeq int64, limit int) ([]Entry, error)
}

// Problem is one thing verification found wrong.
type Problem struct {
	Seq     int64 // the first row concerned (0: the trail as a whole)
	Message string
}

// Report is the result of Verify.
type Report struct {
	Rows        int64 // rows read
	Head        []byte
	Checkpoints int // checkpoints compared
	// LastCheckpoint is the newest checkpoint compared (zero when there is none).
	LastCheckpoint Checkpoint
	Problems       []Problem // in the order of the trail; empty when all is well
}

// OK reports whether the trail verified.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// maxProblems bounds a report: the first bad row is what an operator needs.
const maxProblems = 20

// Verify reads the whole trail and checks that rows are numbered without gaps, that every
// row's hash is the hash of its contents and of the row before, and that every checkpoint
// (already checked for its signature) names a size the trail reaches and the hash the trail
// has there. The first problem names the first bad row or the missing tail.
func Verify(ctx context.Context, src Entries, cps []Checkpoint) (Report, error) {
	var rep Report
	problem := func(seq int64, format string, args ...any) {
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, Problem{Seq: seq, Message: fmt.Sprintf(format, args...)})
		}
	}
	// The stored hash at each checkpointed size.
	want := map[int64][]byte{}
	for _, cp := range cps {
		want[cp.Size] = nil
	}
	prev := Genesis
	var last int64
	for {
		batch, err := src.AuditEntries(ctx, last, 1000)
		if err != nil {
			return rep, fmt.Errorf("read audit rows after %d: %w", last, err)
		}
		for _, en := range batch {
			switch {
			case en.Seq != last+1:
				problem(last+1, "row %d is missing: the rows jump from %d to %d", last+1, last, en.Seq)
			case !bytes.Equal(en.PrevHash, prev):
				problem(en.Seq, "row %d does not link to row %d: its prev_hash differs from that row's hash (a row before it was changed, removed or inserted)", en.Seq, last)
			}
			if !en.Check() {
				problem(en.Seq, "row %d was changed: its contents (%s at %s) do not match its hash", en.Seq, en.Action, en.Time.UTC().Format(time.RFC3339))
			}
			if _, ok := want[en.Seq]; ok {
				want[en.Seq] = en.Hash
			}
			prev, last = en.Hash, en.Seq
			rep.Rows++
		}
		if len(batch) < 1000 {
			break
		}
	}
	rep.Head = prev
	var prevSize int64 = -1
	for i, cp := range cps {
		rep.Checkpoints++
		rep.LastCheckpoint = cp
		when := cp.Time.UTC().Format(time.RFC3339)
		if cp.Size < prevSize {
			problem(0, "checkpoint %d (%s) covers %d rows, fewer than the one before it (%d)", i+1, when, cp.Size, prevSize)
		}
		prevSize = max(prevSize, cp.Size)
		if cp.Size > last {
			problem(last+1, "rows %d to %d are missing at the tail: the checkpoint of %s covers %d rows, the trail holds %d", last+1, cp.Size, when, cp.Size, last)
			continue
		}
		if h := want[cp.Size]; !bytes.Equal(h, cp.Hash) {
			problem(cp.Size, "rows up to %d were rewritten: the hash of row %d differs from the signed checkpoint of %s", cp.Size, cp.Size, when)
		}
	}
	return rep, nil
}

// Query selects rows for a search: every set field must match. UserID matches the actor or
// the subject. Rows come newest first; BeforeSeq > 0 pages back from there.
type Query struct {
	VisitID   string
	UserID    string
	Action    Action
	From, To  time.Time // [From, To); zero = open
	BeforeSeq int64
	Limit     int
}
