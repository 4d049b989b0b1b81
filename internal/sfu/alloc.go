package sfu

import "sort"

// layerOption is one layer of a video publication, as the allocator sees it.
type layerOption struct {
	bitrate int  // bit/s (measured, or typical before there is a measure)
	height  int  // pixels, from its key frames (0: not known yet)
	active  bool // packets are arriving
}

// videoDemand is one video down track of a subscriber.
type videoDemand struct {
	priority  int           // higher is served first: screens, then the active speaker
	layers    []layerOption // lowest quality first
	maxHeight int           // how tall the subscriber shows it: -1 hidden, 0 not said
	current   int           // the layer chosen last time (-1 none), for hysteresis
}

// upgradeMargin: a layer above the current one is taken only if it fits with this much to
// spare (in percent), so that an estimate hovering at a layer's rate does not flip the layer
// at every tick.
const upgradeMargin = 20

// allocate chooses a layer (or -1: paused) for each video down track of a subscriber
// within budget (bit/s left for video once audio is reserved). Every shown track first
// gets its lowest active layer, in priority order, as long as that fits (or in any case
// when keepLowest: the link shows no loss); then the tracks are raised one layer at a time,
// in priority order, each no higher than the smallest layer at least as tall as it is
// shown, while that fits. A track that does not fit at all is paused: audio is never given
// up for video.
func allocate(budget int, ds []videoDemand, keepLowest bool) []int {
	res := make([]int, len(ds))
	want := make([]int, len(ds))
	order := make([]int, len(ds))
	for i, d := range ds {
		res[i] = -1
		want[i] = wantedLayer(d)
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return ds[order[a]].priority > ds[order[b]].priority })
	spent := 0
	fits := func(i, l, cost int) bool {
		if l > ds[i].current {
			cost += cost * upgradeMargin / 100
		}
		return spent+cost <= budget
	}
	for _, i := range order {
		if want[i] < 0 {
			continue
		}
		l := nextActive(ds[i], -1, want[i])
		if l < 0 {
			continue
		}
		if c := ds[i].layers[l].bitrate; keepLowest || fits(i, l, c) {
			res[i] = l
			spent += c
		}
	}
	for raised := true; raised; {
		raised = false
		for _, i := range order {
			if res[i] < 0 {
				continue
			}
			l := nextActive(ds[i], res[i], want[i])
			if l < 0 {
				continue
			}
			delta := ds[i].layers[l].bitrate - ds[i].layers[res[i]].bitrate
			if fits(i, l, delta) {
				spent += delta
				res[i] = l
				raised = true
			}
		}
	}
	return res
}

// nextActive is the lowest active layer above from and at most upto, or -1.
func nextActive(d videoDemand, from, upto int) int {
	for l := from + 1; l <= upto && l < len(d.layers); l++ {
		if d.layers[l].active {
			return l
		}
	}
	return -1
}

// wantedLayer is the highest layer worth sending: -1 for a hidden video, else the
// smallest layer at least as tall as the video is shown (90% counts: a layer slightly
// smaller than its box looks the same), or the top layer when the size is not said.
func wantedLayer(d videoDemand) int {
	top := len(d.layers) - 1
	switch {
	case d.maxHeight < 0 || top < 0:
		return -1
	case d.maxHeight == 0:
		return top
	}
	heights := layerHeights(d.layers)
	for l, h := range heights {
		if h*10 >= d.maxHeight*9 {
			return l
		}
	}
	return top
}

// layerHeights fills in unknown layer heights: simulcast layers are a quarter, a half and
// the whole of the top one (the browser client's scaleResolutionDownBy 4, 2, 1), and a
// top layer of unknown size is taken as 720 pixels.
func layerHeights(ls []layerOption) []int {
	out := make([]int, len(ls))
	top := 0
	for l := len(ls) - 1; l >= 0; l-- {
		if ls[l].height > 0 {
			top = ls[l].height << (len(ls) - 1 - l)
			break
		}
	}
	if top == 0 {
		top = 720
	}
	for l := range ls {
		if ls[l].height > 0 {
			out[l] = ls[l].height
		} else {
			out[l] = top >> (len(ls) - 1 - l)
		}
	}
	return out
}
