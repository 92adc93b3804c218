package composecmd

import (
	"fmt"
	"testing"
)

func TestSplitUp(t *testing.T) {
	cases := []struct {
		in, create, up []string
	}{
		{[]string{"-d"}, nil, []string{"-d", "--no-recreate"}},
		{[]string{"-d", "--wait", "--wait-timeout", "30", "api"}, []string{"api"}, []string{"-d", "--wait", "--wait-timeout", "30", "api", "--no-recreate"}},
		{[]string{"--force-recreate", "--pull", "never", "--scale", "api=2", "--remove-orphans", "-d"},
			[]string{"--force-recreate", "--pull", "never", "--scale", "api=2", "--remove-orphans"},
			[]string{"--scale", "api=2", "-d", "--no-recreate"}},
		{[]string{"--pull=always", "--exit-code-from", "api", "-t", "5", "--attach", "web", "worker"},
			[]string{"--pull=always", "worker"},
			[]string{"--exit-code-from", "api", "-t", "5", "--attach", "web", "worker", "--no-recreate"}},
		{[]string{"--always-recreate-deps", "-V", "--no-deps", "api"}, []string{"api"}, []string{"--no-deps", "api", "--no-recreate"}},
	}
	for _, c := range cases {
		create, up := splitUp(c.in)
		if fmt.Sprint(create) != fmt.Sprint(c.create) || fmt.Sprint(up) != fmt.Sprint(c.up) {
			t.Errorf("splitUp(%q) = create %q, up %q; want %q, %q", c.in, create, up, c.create, c.up)
		}
	}
}
