package sfu

import (
	"slices"
	"testing"
	"time"
)

// three is a camera with three active layers (q 150k, h 450k, f 1.2M; 180/360/720 px).
func three() []layerOption {
	return []layerOption{{150_000, 180, true}, {450_000, 360, true}, {1_200_000, 720, true}}
}

func TestAllocate(t *testing.T) {
	cam := func(prio, maxH, cur int) videoDemand {
		return videoDemand{priority: prio, layers: three(), maxHeight: maxH, current: cur}
	}
	for _, tc := range []struct {
		name   string
		budget int
		ds     []videoDemand
		want   []int
	}{
		{"plenty: the top layer", 10_000_000, []videoDemand{cam(1, 0, 2)}, []int{2}},
		{"shown small: a small layer whatever the budget", 10_000_000, []videoDemand{cam(1, 180, 2)}, []int{0}},
		{"shown medium", 10_000_000, []videoDemand{cam(1, 300, 2)}, []int{1}},
		{"a little smaller than its box counts", 10_000_000, []videoDemand{cam(1, 390, 2)}, []int{1}},
		{"hidden: paused", 10_000_000, []videoDemand{cam(1, -1, 2)}, []int{-1}},
		{"constrained: a lower layer", 700_000, []videoDemand{cam(1, 0, 0)}, []int{1}},
		{"heavily constrained: paused", 100_000, []videoDemand{cam(1, 0, 0)}, []int{-1}},
		{"nothing left after audio", -50_000, []videoDemand{cam(1, 0, 0)}, []int{-1}},
		{"upgrade needs a margin", 1_300_000, []videoDemand{cam(1, 0, 1)}, []int{1}},
		{"keeping a layer needs none", 1_250_000, []videoDemand{cam(1, 0, 2)}, []int{2}},
		{"everyone gets the lowest layer first", 500_000, []videoDemand{cam(1, 0, 0), cam(1, 0, 0), cam(1, 0, 0)}, []int{0, 0, 0}},
		{"then the higher priority is raised first", 1_000_000, []videoDemand{cam(1, 0, 1), cam(2, 0, 1), cam(1, 0, 1)}, []int{0, 1, 0}},
		{"the lowest priority goes when not all fit", 350_000, []videoDemand{cam(1, 0, 0), cam(3, 0, 0), cam(2, 0, 0)}, []int{-1, 0, 0}},
		{"an inactive layer is skipped", 10_000_000, []videoDemand{{priority: 1, layers: []layerOption{{150_000, 180, true}, {450_000, 360, true}, {1_200_000, 720, false}}, current: 1}}, []int{1}},
		{"a paused lower layer: the next active one", 10_000_000, []videoDemand{{priority: 1, layers: []layerOption{{150_000, 180, false}, {450_000, 360, true}, {1_200_000, 720, false}}, maxHeight: 180, current: -1}}, []int{-1}},
		{"one-layer screen share", 2_000_000, []videoDemand{{priority: 3, layers: []layerOption{{1_200_000, 1080, true}}, current: 0}, cam(1, 0, 0)}, []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := allocate(tc.budget, tc.ds, false); !slices.Equal(got, tc.want) {
				t.Errorf("allocate(%d) = %v, want %v", tc.budget, got, tc.want)
			}
		})
	}
}

// TestAllocateKeepLowest: without loss, a shown video keeps its lowest layer even when the
// estimate says it does not fit; a hidden one is still paused, and nothing is raised.
func TestAllocateKeepLowest(t *testing.T) {
	ds := []videoDemand{
		{priority: 1, layers: three(), current: 0},
		{priority: 1, layers: three(), maxHeight: -1, current: 0},
	}
	if got := allocate(50_000, ds, true); !slices.Equal(got, []int{0, -1}) {
		t.Errorf("keepLowest: %v", got)
	}
	if got := allocate(50_000, ds, false); !slices.Equal(got, []int{-1, -1}) {
		t.Errorf("with loss: %v", got)
	}
}

func TestLayerHeights(t *testing.T) {
	for _, tc := range []struct {
		in   []layerOption
		want []int
	}{
		{[]layerOption{{}, {}, {}}, []int{180, 360, 720}},
		{[]layerOption{{}, {}, {height: 540}}, []int{135, 270, 540}},
		{[]layerOption{{height: 90}, {}, {}}, []int{90, 180, 360}},
		{[]layerOption{{height: 100}, {height: 250}, {}}, []int{100, 250, 500}},
		{[]layerOption{{}}, []int{720}},
	} {
		if got := layerHeights(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("layerHeights(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestSpeakers(t *testing.T) {
	var s speakerState
	quiet := (127 - 70) * 16
	loud := (127 - 20) * 16
	steps := []struct {
		levels map[string]int
		active string
		n      int // how many are speaking
	}{
		{map[string]int{"a": quiet, "b": quiet}, "", 0},
		{map[string]int{"a": loud, "b": quiet}, "a", 1},       // the first speaker at once
		{map[string]int{"a": loud, "b": loud + 2*16}, "a", 2}, // barely louder: no switch
		{map[string]int{"a": quiet, "b": loud}, "a", 1},       // a fell silent: b is candidate...
		{map[string]int{"a": quiet, "b": loud}, "a", 1},       //
		{map[string]int{"a": quiet, "b": loud}, "a", 1},       //
		{map[string]int{"a": quiet, "b": loud}, "b", 1},       // ...for a second
		{map[string]int{"a": quiet, "b": quiet}, "b", 0},      // silence keeps the last speaker
		{map[string]int{"a": quiet}, "", 0},                   // b left
	}
	for i, st := range steps {
		active, speaking := s.update(st.levels)
		if active != st.active || len(speaking) != st.n {
			t.Errorf("step %d: active %q speaking %v, want %q and %d", i, active, speaking, st.active, st.n)
		}
	}
	if int(loudness(0x80|20)) != loud {
		t.Errorf("loudness ignores the voice bit: %d", loudness(0x80|20))
	}
}

// TestCongestionHold: loss holds the estimate down for congestionHold after the last lossy
// tick however long the loss lasts; an episode that starts soon after the last one ended
// holds twice as long, up to maxCongestionHold; one that starts later holds congestionHold
// again.
func TestCongestionHold(t *testing.T) {
	const tick = int64(300 * time.Millisecond)
	var c congestion
	now := int64(time.Hour)
	lossy := func(d time.Duration) { // loss at every tick for d
		for end := now + int64(d); now < end; now += tick {
			if !c.observe(now, true, 0) {
				t.Fatalf("not congested during the loss")
			}
		}
	}
	// clearFor is how long, with no more loss, the subscriber stays congested.
	clearFor := func() time.Duration {
		start := now
		for c.observe(now, false, 0) {
			now += tick
		}
		return time.Duration(now - start)
	}
	near := func(got, want time.Duration) bool { return got >= want-time.Second && got <= want+time.Second }

	if c.observe(now, false, 0) {
		t.Fatal("congested before any loss")
	}
	for i := range 100 { // a queue on a link that lost nothing (a busy host's jitter, maybe)
		q := float64(queueThreshold)
		if i%3 == 2 {
			q = deepQueue // deep now and then, never for long
		}
		if c.observe(now, false, q) {
			t.Fatalf("congested by a queue of %v ms on a link that never lost a packet", q)
		}
		now += tick
	}
	lossy(20 * time.Second) // a long episode holds no longer than a short one
	if got := clearFor(); !near(got, congestionHold) {
		t.Errorf("after 20 s of loss, congested %v more; want %v", got, congestionHold)
	}
	lossy(time.Second) // soon after: twice as long
	if got := clearFor(); !near(got, 2*congestionHold) {
		t.Errorf("loss again soon after: congested %v more; want %v", got, 2*congestionHold)
	}
	for range 10 { // again and again: up to the longest
		lossy(time.Second)
		clearFor()
	}
	lossy(time.Second)
	if got := clearFor(); !near(got, maxCongestionHold) {
		t.Errorf("loss coming back again and again: congested %v more; want %v", got, maxCongestionHold)
	}
	now += int64(2*maxCongestionHold) + tick // a long quiet spell: back to the first hold
	lossy(time.Second)
	if got := clearFor(); !near(got, congestionHold) {
		t.Errorf("loss after a long quiet spell: congested %v more; want %v", got, congestionHold)
	}

	// A queue right after an episode (a deep buffer that has not dropped yet) counts as
	// loss: congested again, for a doubled hold; long after, it does not.
	if !c.observe(now, false, queueThreshold) {
		t.Error("a queue just after an episode: not congested")
	}
	if got := clearFor(); !near(got, 2*congestionHold) {
		t.Errorf("a queue just after an episode: congested %v more; want %v", got, 2*congestionHold)
	}
	now += int64(4*congestionHold) + tick
	if c.observe(now, false, queueThreshold) {
		t.Error("a queue long after the last loss: congested")
	}

	// A deep queue that lasts (a deep buffer filling, before it drops anything) counts on
	// any link, once it has lasted deepQueueFor.
	now += int64(4*maxCongestionHold) + tick
	start := now
	for !c.observe(now, false, deepQueue) {
		if now += tick; now-start > int64(10*deepQueueFor) {
			t.Fatal("a lasting deep queue: never congested")
		}
	}
	if took := time.Duration(now - start); took < deepQueueFor {
		t.Errorf("a deep queue congested after %v; want %v of it first", took, deepQueueFor)
	}
}
