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
