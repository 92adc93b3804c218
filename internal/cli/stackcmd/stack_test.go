package stackcmd

import (
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/dso-project/dso/internal/compose"
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

func TestCheckStrategiesRefusesSignal(t *testing.T) {
	web, api := types.ServiceConfig{Name: "web"}, types.ServiceConfig{Name: "api"}
	web.Labels = types.Labels{"dso.update.strategy": "signal"}
	api.Labels = types.Labels{"dso.update.strategy": "restart"}
	p := &types.Project{Name: "app", Services: types.Services{"web": web, "api": api}}
	uses := []compose.Use{{Service: "api", Var: "A"}, {Service: "web", Var: "B"}, {Service: "web", Var: "C"}}
	err := checkStrategies(p, uses, nil)
	if err == nil || !strings.Contains(err.Error(), `service "web": strategy signal`) || strings.Contains(err.Error(), `"api"`) {
		t.Errorf("err %v, want one refusal naming web", err)
	}
	p.Services["web"] = types.ServiceConfig{Name: "web"}
	if err := checkStrategies(p, uses, nil); err != nil {
		t.Errorf("rolling and restart refused: %v", err)
	}
}
