package composecmd

import "testing"

// TestOtherFormat: the host ports the agent binds follow ps's table only,
// never JSON, IDs, service names or a filtered table.
func TestOtherFormat(t *testing.T) {
	for arg, want := range map[string]bool{
		"--format": true, "--format=json": true, "-q": true, "--quiet": true, "-aq": true, "--services": true,
		"--status=running": true, "--filter": true, "-a": false, "--all": false, "--no-trunc": false, "web": false,
	} {
		if got := otherFormat(arg); got != want {
			t.Errorf("otherFormat(%q) = %v, want %v", arg, got, want)
		}
	}
}

func TestRemovesVolumes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{{[]string{"-v"}, true}, {[]string{"--volumes"}, true}, {[]string{"--remove-orphans", "--volumes=true"}, true}, {[]string{"--remove-orphans"}, false}, {nil, false}} {
		if got := removesVolumes(tc.args); got != tc.want {
			t.Errorf("removesVolumes(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}
