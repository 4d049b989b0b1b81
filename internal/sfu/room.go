package sfu

import (
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Timing of the room's own goroutine.
const (
	speakerEvery  = 250 * time.Millisecond // active speaker detection
	dynacastEvery = 500 * time.Millisecond // layer bitrates and which layers anyone receives
	// dynacastHold: a layer nobody receives is paused only after this long, so that a
	// subscriber's brief dip does not make the publisher stop and restart an encoder.
	dynacastHold = 3 * time.Second
)

// room is one visit in the SFU: its participants and their publications. Its lock guards
// the lists, never the packet path; it is taken by the participants' goroutines when they
// publish, unpublish, join and leave, and by the room's ticker.
type room struct {
	s   *SFU
	id  string
	log *slog.Logger

	mu           sync.Mutex
	participants map[string]*participant
	ups          map[*upTrack]bool // every live publication
	closed       bool
	done         chan struct{} // closed with the room: stops run

	// Owned by run.
	speakers    speakerState
	lastSpeaker string
	lastSpeak   []string
}

func newRoom(s *SFU, id string) *room {
	r := &room{s: s, id: id, log: s.log.With("visit", id), participants: map[string]*participant{}, ups: map[*upTrack]bool{}, done: make(chan struct{})}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); r.run() }() // ends when the room closes
	return r
}

// takeWait is how long join waits for a reconnected participant's goroutine to take its
// new sink before it hands out the participant's session anyway.
const takeWait = 2 * time.Second

// join adds a participant, or gives a reconnected one its new sink. It returns "" when the
// SFU is closed.
//
// A reconnected participant keeps its session only once its goroutine has taken the new
// sink: one whose connections failed while its signalling was away stops when it reads
// that (onPCState), and an evConnected queued behind it would never be read. Handing its
// session out then would leave the page with an SFU session nothing stands behind (its
// signals refused, no new session ever sent); so join waits, and joins it anew if it
// stopped first.
func (r *room) join(m Member) (session string) {
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			nr := r.s.room(r.id, true)
			if nr == nil || nr == r {
				return ""
			}
			r = nr
			continue
		}
		old := r.participants[m.ID]
		if old != nil && old.session == m.Session && !old.stopping() {
			taken := make(chan struct{})
			old.mail.put(evConnected{sink: m.Sink, taken: taken})
			r.mu.Unlock()
			wait := time.NewTimer(takeWait)
			select {
			case <-taken:
			case <-old.ctx.Done():
			case <-wait.C:
				r.log.Warn("sfu: a reconnected participant did not take its signalling back in time", "participant", m.ID)
			}
			wait.Stop()
			select {
			case <-taken:
				return old.sfuSession
			default:
			}
			if !old.stopping() {
				return old.sfuSession // slow, not stopped: as before join waited
			}
			continue // it stopped first: join anew
		}
		if old != nil {
			delete(r.participants, m.ID) // a reloaded page, or one that stopped: the old connections go
			old.stop()
		}
		break
	}
	defer r.mu.Unlock()
	p := newParticipant(r, m)
	r.participants[m.ID] = p
	for up := range r.ups {
		if up.publisher != m.ID {
			p.mail.put(evSubscribe{up: up})
		}
	}
	p.start()
	r.log.Info("sfu: participant joined", "participant", m.ID, "observer", m.Observer)
	return p.sfuSession
}

func (r *room) get(id string) *participant {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.participants[id]
}

func (r *room) leave(id string) {
	r.mu.Lock()
	p := r.participants[id]
	r.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

func (r *room) disconnected(id string) {
	if p := r.get(id); p != nil {
		p.mail.put(evDisconnected{})
	}
}

// publish makes a publication known: every other participant subscribes to it.
func (r *room) publish(up *upTrack) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.participants[up.publisher] != up.owner {
		return
	}
	r.ups[up] = true
	for _, p := range r.participants {
		if p != up.owner {
			p.mail.put(evSubscribe{up: up})
		}
	}
}

// unpublish takes a publication away from every subscriber.
func (r *room) unpublish(up *upTrack) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ups[up] {
		return
	}
	delete(r.ups, up)
	for _, p := range r.participants {
		if p != up.owner {
			p.mail.put(evUnsubscribe{up: up})
		}
	}
}

// forget removes a participant whose goroutine is ending, and its publications. The last
// one out closes the room.
func (r *room) forget(p *participant) {
	r.mu.Lock()
	if r.participants[p.id] == p {
		delete(r.participants, p.id)
	}
	for up := range r.ups {
		if up.owner == p {
			delete(r.ups, up)
			for _, o := range r.participants {
				o.mail.put(evUnsubscribe{up: up})
			}
		}
	}
	empty := len(r.participants) == 0
	if empty && !r.closed {
		r.closed = true
		close(r.done)
	}
	r.mu.Unlock()
	r.s.m.visitSubscribers(r.id, r.subscriberCount())
	if empty {
		r.s.dropRoom(r)
		r.s.m.forgetVisit(r.id)
	}
}

// subscriberCount is how many participants receive through the SFU (for the metric).
func (r *room) subscriberCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.participants {
		if p.subscribing.Load() {
			n++
		}
	}
	return n
}

// close stops every participant; the room goes when the last has gone.
func (r *room) close() {
	r.mu.Lock()
	ps := make([]*participant, 0, len(r.participants))
	for _, p := range r.participants {
		ps = append(ps, p)
	}
	if len(ps) == 0 && !r.closed {
		r.closed = true
		close(r.done)
		r.mu.Unlock()
		r.s.dropRoom(r)
		return
	}
	r.mu.Unlock()
	for _, p := range ps {
		p.stop()
	}
}

// run is the room's ticker: active speakers, layer bitrates and dynacast.
func (r *room) run() {
	phase := tickSlot(speakerEvery)
	t := time.NewTimer(untilSlot(speakerEvery, phase))
	defer t.Stop()
	var n int
	for {
		select {
		case <-r.done:
			return
		case now := <-t.C:
			t.Reset(untilSlot(speakerEvery, phase))
			n++
			ups, ps := r.snapshot()
			r.detectSpeakers(ups, ps)
			if n%int(dynacastEvery/speakerEvery) == 0 {
				for _, up := range ups {
					up.measure(now)
					up.dynacast(now)
				}
			}
		}
	}
}

func (r *room) snapshot() ([]*upTrack, []*participant) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ups := make([]*upTrack, 0, len(r.ups))
	for up := range r.ups {
		ups = append(ups, up)
	}
	ps := make([]*participant, 0, len(r.participants))
	for _, p := range r.participants {
		ps = append(ps, p)
	}
	return ups, ps
}

// detectSpeakers tells everyone when the active speaker, or who is speaking, changes.
func (r *room) detectSpeakers(ups []*upTrack, ps []*participant) {
	levels := map[string]int{}
	now := monotime()
	for _, up := range ups {
		if up.source == SourceAudio {
			l := int(up.loudness.Load())
			if now-up.layers[0].last.Load() > int64(silentAfter) {
				l = 0
			}
			levels[up.publisher] = l
		}
	}
	active, speaking := r.speakers.update(levels)
	if active == r.lastSpeaker && slices.Equal(speaking, r.lastSpeak) {
		return
	}
	r.lastSpeaker, r.lastSpeak = active, speaking
	for _, p := range ps {
		p.sink().Speakers(active, speaking)
	}
	// Subscribers favour the active speaker's camera when bandwidth is short.
	for _, p := range ps {
		p.mail.put(evSpeaker{id: active})
	}
}
