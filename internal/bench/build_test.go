package bench

import (
	"runtime/debug"
	"testing"
)

// TestDescribeBuild: the report's header names the build measured, so that two builds of
// one commit (with and without a PGO profile, say) are told apart.
func TestDescribeBuild(t *testing.T) {
	for _, c := range []struct {
		settings []debug.BuildSetting
		want     string
	}{
		{nil, "commit unknown, pgo off"},
		{[]debug.BuildSetting{{Key: "vcs.revision", Value: "43e0e04b7a1f2c3d4e5f60718293a4b5c6d7e8f9"}, {Key: "vcs.modified", Value: "false"}},
			"43e0e04b7a1f, pgo off"},
		{[]debug.BuildSetting{{Key: "-pgo", Value: "/tmp/merged.pgo"}, {Key: "vcs.revision", Value: "43e0e04"}, {Key: "vcs.modified", Value: "true"}},
			"43e0e04+changes, pgo merged.pgo"},
	} {
		if got := describeBuild(c.settings); got != c.want {
			t.Errorf("describeBuild(%v) = %q, want %q", c.settings, got, c.want)
		}
	}
}
