package e2e

import (
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// projectContainers counts every container of project, running or not.
func projectContainers(t *testing.T, project string) int {
	t.Helper()
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project)
	list, err := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// TestUpRefusesWhatDeliveryWould: `up` applies the checks of delivery
// before anything is created: a NUL byte in an env value and variable names
// no environment can hold stop it with exit code 4, each named, no value
// shown, no container created. (In the seed's mapping form such names are
// refused earlier, by dso.yaml's validation, with exit code 3.)
func TestUpRefusesWhatDeliveryWould(t *testing.T) {
	u := newUser(t)
	image := testbed.TestappImage(t)
	nul := append(canary(t, "nul"), 0, 'x')
	plain := canary(t, "plain")
	u.initVault(map[string][]byte{"app/nul": nul, "app/plain": plain})
	dir := writeProject(t, map[string]string{
		"compose.yaml": `
services:
  api:
    image: ` + image + `
    environment:
      WITH_NUL: dso://app/nul
      NUL_AS_FILE: dsofile://app/nul
      X-Y: dso://app/plain
      A.B: dso://app/plain
      "..": dso://app/plain
`,
	})
	project := testbed.Project(t, dir)
	r := u.run(dir, nil, "dso", "up", "-p", project, "-d")
	if r.code != 4 {
		t.Errorf("exit code %d, want 4\n%s", r.code, r.output())
	}
	for _, want := range []string{`service "api"`, "env WITH_NUL: the value has a NUL byte", `env name "X-Y"`, `env name ".."`, `env name "A.B"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the error does not say %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "NUL_AS_FILE") {
		t.Errorf("a NUL byte in a file secret was refused:\n%s", r.stderr)
	}
	if n := projectContainers(t, project); n != 0 {
		t.Errorf("a refused up created %d containers", n)
	}
	for _, c := range [][]byte{nul[:len(nul)-2], plain} {
		if strings.Contains(r.output(), string(c)) {
			t.Errorf("LEAK: a value is in the output of the refused up")
		}
	}
}
