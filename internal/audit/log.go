package audit

import (
	"context"
	"time"
)

// Store is what the log needs of the database: appending a row atomically after the last
// one. AppendAudit reads the last row's sequence number and hash, calls link with them (the
// new row's seq is the last one plus one; Genesis and 1 for the first row) and stores the
// row with the hash link returns, all in one transaction.
type Store interface {
	AppendAudit(ctx context.Context, e Event, link func(prev []byte, seq int64) []byte) (Entry, error)
}

// Log is the tamper-evident trail: a Recorder that appends hash-chained rows.
type Log struct {
	st  Store
	now func() time.Time
}

// NewLog returns a Log on st. now may be nil (time.Now).
func NewLog(st Store, now func() time.Time) *Log {
	if now == nil {
		now = time.Now
	}
	return &Log{st: st, now: now}
}

// Record appends the event. The request that caused it may be over (a client that went
// away): the row is written anyway.
func (l *Log) Record(ctx context.Context, e Event) error {
	e = Sanitize(e, l.now())
	_, err := l.st.AppendAudit(context.WithoutCancel(ctx), e, func(prev []byte, seq int64) []byte {
		return ChainHash(prev, seq, e)
	})
	return err
}

// Actor is who is acting in a request or connection, and from where: the web and signalling
// layers put it into the context, and the parts below record events with it.
type Actor struct {
	ID        string // user id or participant id
	Role      string
	Addr      string
	UserAgent string
}

type actorKey struct{}

// WithActor returns ctx carrying a.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor ctx carries (the zero Actor: nobody known).
func ActorFrom(ctx context.Context) Actor {
	a, _ := ctx.Value(actorKey{}).(Actor)
	return a
}

// Event returns an event of action done by the actor of ctx.
func EventFrom(ctx context.Context, action Action) Event {
	a := ActorFrom(ctx)
	return Event{Action: action, ActorID: a.ID, ActorRole: a.Role, Addr: a.Addr, UserAgent: a.UserAgent}
}
