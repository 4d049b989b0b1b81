package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Entry is one stored row of the trail: its sequence number (1, 2, 3 ... without gaps),
// the event, and its place in the hash chain.
type Entry struct {
	Seq int64
	Event
	PrevHash []byte // Hash of the row before (Genesis for row 1)
	Hash     []byte // ChainHash(PrevHash, Seq, Event)
}

// Genesis is the PrevHash of the first row.
var Genesis = make([]byte, sha256.Size)

// chainVersion starts every canonical encoding, so that a later format cannot be mistaken
// for this one.
const chainVersion = "bedside-audit-v1"

// Canonical is the byte string a row's hash covers: the version, the sequence number, the
// time in Unix milliseconds, then every field in a fixed order, and the detail pairs sorted
// by key; each item is its length as a uvarint followed by its bytes. Two different rows
// never encode alike, and the encoding does not depend on how the database stores them.
func Canonical(seq int64, e Event) []byte {
	b := make([]byte, 0, 256)
	put := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	put(chainVersion)
	put(strconv.FormatInt(seq, 10))
	put(strconv.FormatInt(e.Time.UnixMilli(), 10))
	for _, s := range []string{string(e.Action), e.ActorID, e.ActorRole, e.VisitID, e.SubjectID, e.Addr, e.UserAgent, e.Outcome} {
		put(s)
	}
	keys := make([]string, 0, len(e.Detail))
	for k := range e.Detail {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	put(strconv.Itoa(len(keys)))
	for _, k := range keys {
		put(k)
		put(e.Detail[k])
	}
	return b
}

// ChainHash is the hash of a row: SHA-256 of the previous row's hash followed by the row's
// canonical encoding.
func ChainHash(prev []byte, seq int64, e Event) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(Canonical(seq, e))
	return h.Sum(nil)
}

// Check reports whether an entry's stored hash is the hash of its contents.
func (en Entry) Check() bool {
	return bytes.Equal(en.Hash, ChainHash(en.PrevHash, en.Seq, en.Event))
}

// Field limits: an event is a short statement, never a document.
const (
	maxID      = 64
	maxUA      = 256
	maxDetails = 16
	maxKey     = 32
	maxValue   = 128
)

// Sanitize returns the event as it will be stored: time set (now when zero), UTC, at
// millisecond precision; every field valid UTF-8 without control characters and bounded;
// detail values that look like secrets replaced. The hash covers the sanitized event, so a
// row read back from the database hashes the same.
func Sanitize(e Event, now time.Time) Event {
	if e.Time.IsZero() {
		e.Time = now
	}
	e.Time = e.Time.UTC().Truncate(time.Millisecond)
	e.Action = Action(clean(string(e.Action), maxID))
	e.ActorID = clean(e.ActorID, maxID)
	e.ActorRole = clean(e.ActorRole, maxID)
	e.VisitID = clean(e.VisitID, maxID)
	e.SubjectID = clean(e.SubjectID, maxID)
	e.Addr = clean(e.Addr, maxID)
	e.UserAgent = clean(e.UserAgent, maxUA)
	e.Outcome = clean(e.Outcome, maxID)
	if e.Outcome == "" {
		e.Outcome = "ok"
	}
	if len(e.Detail) > 0 {
		keys := make([]string, 0, len(e.Detail))
		for k := range e.Detail {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		d := make(map[string]string, min(len(keys), maxDetails))
		for _, k := range keys[:min(len(keys), maxDetails)] {
			v := clean(e.Detail[k], maxValue)
			if looksSecret(v) {
				v = "[redacted]"
			}
			d[clean(k, maxKey)] = v
		}
		e.Detail = d
	} else {
		e.Detail = nil
	}
	return e
}

// clean makes s valid UTF-8 without control characters, at most n bytes.
func clean(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// looksSecret reports whether v has the shape of a Bedside token (43 base64url characters):
// a mistake in a caller must not put a link or cookie into the trail.
func looksSecret(v string) bool {
	if len(v) < 40 {
		return false
	}
	run := 0
	for _, r := range v {
		if r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			run++
			if run >= 40 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}
