package agent

import (
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/secretref"
)

func TestAccessGrants(t *testing.T) {
	rules := []config.Access{
		{Users: []string{"alice"}, Secrets: []string{"shop/", "shared/tls"}},
		{Groups: []string{"blog-devs"}, Secrets: []string{"blog"}},
	}
	cases := []struct {
		user   string
		groups []string
		path   string
		want   bool
	}{
		{"alice", nil, "shop/db", true},
		{"alice", nil, "shop/a/b", true},
		{"alice", nil, "shopping/db", false},
		{"alice", nil, "shared/tls", true},
		{"alice", nil, "shared/tls/key", true},
		{"alice", nil, "shared/tlsx", false},
		{"alice", nil, "blog/db", false},
		{"bob", []string{"blog-devs"}, "blog/db", true},
		{"bob", []string{"blog-devs"}, "shop/db", false},
		{"bob", []string{"other"}, "blog/db", false},
		{"mallory", nil, "shop/db", false},
	}
	for _, c := range cases {
		if got := accessGrants(rules, c.user, c.groups, c.path); got != c.want {
			t.Errorf("%s %v -> %s: %v, want %v", c.user, c.groups, c.path, got, c.want)
		}
	}
}

func TestCheckAccess(t *testing.T) {
	p, err := newProjects(nil, "", 500)
	if err != nil {
		t.Fatal(err)
	}
	// 54321 is in no user database here: it is known by its number.
	a := &Agent{projects: p, opts: Options{Access: []config.Access{{Users: []string{"54321"}, Secrets: []string{"shop"}}}}}
	shop := map[string]secretref.Ref{"DB": {Path: "shop/db"}}
	blog := map[string]secretref.Ref{"DB": {Path: "shop/db"}, "TOKEN": {Path: "blog/token"}}
	for _, uid := range []uint32{0, 500, 54321} {
		if err := a.checkAccess(uid, shop); err != nil {
			t.Errorf("uid %d, shop/db: %v", uid, err)
		}
	}
	if err := a.checkAccess(54321, blog); err == nil || !strings.Contains(err.Error(), "blog/token") || !strings.Contains(err.Error(), "TOKEN") {
		t.Errorf("uid 54321, blog/token: %v, want a refusal naming the path and the variable", err)
	}
	if err := a.checkAccess(0, blog); err != nil {
		t.Errorf("root: %v", err)
	}
	a.opts.Access = nil
	if err := a.checkAccess(54321, blog); err != nil {
		t.Errorf("without rules: %v", err)
	}
}
