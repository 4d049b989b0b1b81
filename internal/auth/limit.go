package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// LockoutStore is what the limiter needs of the database: failures and locks survive a
// restart.
type LockoutStore interface {
	RecordFailure(ctx context.Context, key string, now time.Time, window time.Duration, max int, lockFor time.Duration) (time.Time, error)
	LockedUntil(ctx context.Context, key string) (time.Time, error)
	ClearFailures(ctx context.Context, key string) error
}

// Rule is a lockout rule: Max failures within Window lock the key for LockFor.
type Rule struct {
	Prefix  string // key prefix, e.g. "signin:acct"
	Scope   string // account, address or visit (for the audit trail)
	Max     int
	Window  time.Duration
	LockFor time.Duration
}

// The rules (docs/security.md). Per account and per visit they stop guessing one secret;
// per address they stop one machine guessing many.
var (
	RuleSignInAccount = Rule{"signin:acct", "account", 5, 15 * time.Minute, 15 * time.Minute}
	RuleSignInAddress = Rule{"signin:addr", "address", 20, 15 * time.Minute, 15 * time.Minute}
	RuleSecondFactor  = Rule{"mfa:acct", "account", 5, 15 * time.Minute, 15 * time.Minute}
	RuleLinkAddress   = Rule{"link:addr", "address", 10, 15 * time.Minute, 15 * time.Minute}
	RuleLinkVisit     = Rule{"link:visit", "visit", 10, 15 * time.Minute, 15 * time.Minute}
)

// Key is one thing counted under a rule.
type Key struct {
	Rule Rule
	ID   string
}

func (k Key) String() string { return k.Rule.Prefix + ":" + k.ID }

// AccountKey is the sign-in key of an email as typed: its hash, so that the lockout table
// holds no addresses of people who are not users.
func AccountKey(email string) Key {
	h := sha256.Sum256([]byte(NormalizeEmail(email)))
	return Key{RuleSignInAccount, hex.EncodeToString(h[:16])}
}

// LockedError says a key is locked out until Until.
type LockedError struct {
	Until time.Time
	Scope string
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("locked out (%s) until %s", e.Scope, e.Until.UTC().Format(time.RFC3339))
}

// Limiter counts failures and locks keys out.
type Limiter struct {
	st  LockoutStore
	now func() time.Time
}

// NewLimiter returns a Limiter. now may be nil (time.Now).
func NewLimiter(st LockoutStore, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{st: st, now: now}
}

// Check returns a *LockedError when any of keys is locked now.
func (l *Limiter) Check(ctx context.Context, keys ...Key) error {
	now := l.now()
	for _, k := range keys {
		until, err := l.st.LockedUntil(ctx, k.String())
		if err != nil {
			return fmt.Errorf("lockout %s: %w", k.Rule.Prefix, err)
		}
		if until.After(now) {
			return &LockedError{Until: until, Scope: k.Rule.Scope}
		}
	}
	return nil
}

// Fail counts a failure of k; locked is true when this failure locked it.
func (l *Limiter) Fail(ctx context.Context, k Key) (locked bool, err error) {
	until, err := l.st.RecordFailure(ctx, k.String(), l.now(), k.Rule.Window, k.Rule.Max, k.Rule.LockFor)
	if err != nil {
		return false, fmt.Errorf("lockout %s: %w", k.Rule.Prefix, err)
	}
	return !until.IsZero(), nil
}

// Clear forgets the failures of k (after a success).
func (l *Limiter) Clear(ctx context.Context, k Key) error {
	return l.st.ClearFailures(ctx, k.String())
}
