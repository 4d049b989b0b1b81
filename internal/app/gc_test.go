package app

import (
	"testing"

	"github.com/bedside/bedside/internal/config"
)

// TestGCPercent: serve sets --gc-percent (200 by default) unless GOGC is in the
// environment, which is the operator's and wins; 0 leaves Go's own.
func TestGCPercent(t *testing.T) {
	def := config.Default()
	off := def
	off.GCPercent = 0
	for _, tc := range []struct {
		name string
		cfg  config.Config
		env  []string
		want int
	}{
		{"default", def, []string{"PATH=/bin"}, 200},
		{"GOGC wins", def, []string{"GOGC=400"}, 0},
		{"GOGC=off wins", def, []string{"GOGC=off"}, 0},
		{"a variable ending in GOGC is not GOGC", def, []string{"NOT_GOGC=50"}, 200},
		{"0: Go's own", off, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gcPercent(tc.cfg, tc.env); got != tc.want {
				t.Errorf("gcPercent = %d, want %d", got, tc.want)
			}
		})
	}
}
