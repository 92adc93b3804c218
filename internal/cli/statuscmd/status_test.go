package statuscmd

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/api"
)

// TestPrintStatusShowsWaitingAndCached: a container waiting for its
// secrets is listed with why, and a value served from the cache says so.
func TestPrintStatusShowsWaitingAndCached(t *testing.T) {
	now := time.Now()
	st := api.Status{
		Agent:         api.AgentStatus{Health: api.HealthDegraded, Problems: []string{"container shop-web-1 (abc) got vault:app/db from the cache: provider failing"}},
		HostPortsNote: "the agent lacks CAP_SYS_PTRACE",
		Containers: []api.ContainerStatus{{ID: "abc", Name: "shop-web-1", Project: "shop", Service: "web",
			Secrets: map[string]string{"vault:app/db": "3"}, FromCache: map[string]time.Time{"vault:app/db": now.Add(-3 * time.Minute)}}},
		Waiting: []api.WaitingStatus{{ID: "def", Name: "shop-api-1", Project: "shop", Service: "api", Since: now, Deadline: now.Add(time.Minute), Attempts: 4,
			Reason: `provider "vault": secret "app/api": backend unreachable`}},
	}
	var out bytes.Buffer
	printStatus(&out, st)
	text := out.String()
	for _, want := range []string{
		"Waiting for their secrets (1):",
		`shop-api-1  shop/api  4         in `,
		`provider "vault": secret "app/api": backend unreachable`,
		"vault:app/db@3 (from the cache, confirmed 3m0s ago)",
		"Proxies' host ports: published by Docker (the agent lacks CAP_SYS_PTRACE)\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
	out.Reset()
	st.BindsHostPorts = true
	if printStatus(&out, st); !strings.Contains(out.String(), "Proxies' host ports: bound by the agent\n") {
		t.Errorf("status of an agent that binds host ports:\n%s", out.String())
	}
}
