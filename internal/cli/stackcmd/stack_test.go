package stackcmd

import (
	"slices"
	"strings"
	"testing"
)

func TestParseDeploy(t *testing.T) {
	d, err := parseDeploy([]string{"-c", "a.yaml", "--compose-file=b.yaml", "-cc.yaml", "--config", "dso.yaml", "--prune", "--resolve-image", "never", "--dry-run", "app"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.files, []string{"a.yaml", "b.yaml", "c.yaml"}) || d.config != "dso.yaml" || !d.dryRun || d.stack != "app" ||
		!slices.Equal(d.rest, []string{"--prune", "--resolve-image=never"}) {
		t.Errorf("parsed %+v", d)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", "a.yaml"}, "stack name is required"},
		{[]string{"app"}, "compose file is required"},
		{[]string{"-c", "a.yaml", "app", "other"}, `"app" and "other"`},
		{[]string{"app", "-c"}, "flag needs an argument: -c"},
	} {
		if _, err := parseDeploy(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseDeploy(%q) = %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
