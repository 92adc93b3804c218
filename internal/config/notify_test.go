package config

import (
	"slices"
	"testing"
)

// TestNotify: the endpoints of agent.notify load with their defaults, the
// signing secret comes from the environment and `config show` hides it.
func TestNotify(t *testing.T) {
	c, err := parseFile(t, "testdata/valid/agent-notify.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := c.Agent.Notify
	if len(n) != 2 {
		t.Fatalf("%d endpoints, want 2", len(n))
	}
	if n[0].URL != "https://hooks.example.com/dso" || n[0].Secret != canary {
		t.Errorf("first endpoint = %q with a secret of %d bytes", n[0].URL, len(n[0].Secret))
	}
	if !slices.Equal(n[0].Events, []NotifyEvent{NotifySuccess, NotifyFailure}) {
		t.Errorf("default events = %v, want success and failure", n[0].Events)
	}
	if !slices.Equal(n[1].Events, []NotifyEvent{NotifyFailure}) {
		t.Errorf("events = %v, want failure only", n[1].Events)
	}
	r := c.Redacted()
	if r.Agent.Notify[0].Secret != RedactedText || r.Agent.Notify[1].Secret != RedactedText {
		t.Errorf("config show would print a notification secret")
	}
	if r.Agent.Notify[0].URL != n[0].URL {
		t.Errorf("the URL is redacted too: %q", r.Agent.Notify[0].URL)
	}
}
