package sfu

import (
	"maps"
	"sync/atomic"
)

// editMap replaces the map p points to by an edited copy: copy-on-write, so that the
// packet path reads it with one atomic load and no lock. The caller serialises edits.
func editMap[K comparable, V any](p *atomic.Pointer[map[K]V], edit func(m map[K]V)) {
	next := maps.Clone(*p.Load())
	if next == nil {
		next = map[K]V{}
	}
	edit(next)
	p.Store(&next)
}
