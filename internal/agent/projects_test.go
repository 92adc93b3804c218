package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/state"
)

func TestProjectRegistration(t *testing.T) {
	dir := t.TempDir()
	own, mine := filepath.Join(dir, "own.yaml"), filepath.Join(dir, "mine.yaml")
	for _, f := range []string{own, mine} {
		if err := os.WriteFile(f, []byte("version: v1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store, err := state.Open(filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	const agentUID, other = 500, 1000
	p, err := newProjects(store, own, agentUID)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		peer    uint32
		reg     api.Registration
		refused bool   // ErrRegistrationRefused
		err     string // else an error saying this
	}{
		{"the agent's user names a file", agentUID, api.Registration{Project: "shop", Config: mine}, false, ""},
		{"root names a file", 0, api.Registration{Project: "blog", Config: mine}, false, ""},
		{"another user names a file", other, api.Registration{Project: "wiki", Config: mine}, true, ""},
		{"another user names /etc/shadow", other, api.Registration{Project: "wiki", Config: "/etc/shadow"}, true, ""},
		{"another user names the agent's own file", other, api.Registration{Project: "wiki", Config: own}, false, ""},
		{"another user, no file", other, api.Registration{Project: "notes"}, false, ""},
		{"another user takes over a project", other, api.Registration{Project: "shop"}, true, ""},
		{"a relative path", agentUID, api.Registration{Project: "x", Config: "dso.yaml"}, false, "absolute"},
		{"a missing file", agentUID, api.Registration{Project: "x", Config: filepath.Join(dir, "none.yaml")}, false, "not a readable file"},
		{"a directory", agentUID, api.Registration{Project: "x", Config: dir}, false, "not a readable file"},
		{"a bad project name", agentUID, api.Registration{Project: "../x"}, false, "project name"},
	}
	for _, c := range cases {
		err := p.register(api.Peer{UID: c.peer}, c.reg)
		switch {
		case c.refused && !errors.Is(err, api.ErrRegistrationRefused):
			t.Errorf("%s: %v, want refused", c.name, err)
		case !c.refused && c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || errors.Is(err, api.ErrRegistrationRefused)):
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.err)
		}
	}
	again, err := newProjects(store, own, agentUID)
	if err != nil {
		t.Fatal(err)
	}
	for project, want := range map[string]string{"shop": mine, "blog": mine, "wiki": own, "notes": "", "unknown": ""} {
		if got := again.config(project); got != want {
			t.Errorf("after a restart, project %s uses %q, want %q", project, got, want)
		}
	}
}
