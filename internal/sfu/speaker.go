package sfu

import (
	"slices"
	"sort"
	"time"
)

// Audio levels (RFC 6464): the header extension carries the level in -dBov, 0 (loudest) to
// 127 (silence). The reader keeps a smoothed loudness, 127 - level, times 16.
const (
	// speakingLoudness: louder than -45 dBov counts as speaking (the fake microphone's beeps
	// and speech are around -20 to -30; a quiet room is below -60).
	speakingLoudness = (127 - 45) * 16
	// speakerMargin: a new active speaker must be this much louder than the current one...
	speakerMargin = 4 * 16
	// speakerTicks: ...for this many ticks in a row (a second), so the highlight does not
	// flicker between two people talking over each other.
	speakerTicks = 4
)

// speakerState picks the active speaker from the participants' smoothed loudness.
type speakerState struct {
	active    string
	candidate string
	streak    int
	silent    int // ticks the active speaker has been below speakingLoudness
}

// update takes the loudness per participant and returns the active speaker ("" for
// nobody yet) and everyone speaking now, in a stable order.
func (s *speakerState) update(levels map[string]int) (active string, speaking []string) {
	for id, l := range levels {
		if l >= speakingLoudness {
			speaking = append(speaking, id)
		}
	}
	sort.Strings(speaking)
	loudest, max := "", -1
	for _, id := range speaking {
		if levels[id] > max {
			loudest, max = id, levels[id]
		}
	}
	cur, curSpeaking := levels[s.active]
	curSpeaking = curSpeaking && slices.Contains(speaking, s.active)
	switch {
	case loudest == "" || loudest == s.active:
		s.candidate, s.streak = "", 0
	case s.active == "" || !curSpeaking || max >= cur+speakerMargin:
		if s.candidate != loudest {
			s.candidate, s.streak = loudest, 0
		}
		s.streak++
		if s.active == "" || s.streak >= speakerTicks {
			s.active, s.candidate, s.streak = loudest, "", 0
		}
	default:
		s.candidate, s.streak = "", 0
	}
	if _, ok := levels[s.active]; !ok {
		s.active = "" // gone
	}
	return s.active, speaking
}

// loudnessDecay is how much the held level falls per audio packet (0.4 dB per 20 ms).
const loudnessDecay = 16 * 4 / 10

// silentAfter: a microphone whose packets stopped this long ago (muted, discontinuous
// transmission) is silent, whatever its last level.
const silentAfter = 600 * time.Millisecond

// loudness turns an RFC 6464 level byte into 16 x (127 - level).
func loudness(b byte) int32 { return int32(127-b&0x7f) * 16 }
