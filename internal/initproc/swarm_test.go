package initproc

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSwarmEnvTakesEachVariableFromItsFile(t *testing.T) {
	dir := t.TempDir()
	const canary = "canary-7f3a9c-value"
	if err := os.WriteFile(filepath.Join(dir, "dso.API_KEY"), []byte(canary), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dso.TLS_KEY"), []byte("pem"), 0o400); err != nil {
		t.Fatal(err)
	}
	env, err := SwarmEnv([]string{"PATH=/bin", "API_KEY=dso://app/api_key", "TLS_KEY=dsofile://app/tls#key", "PLAIN=dso-like"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=/bin", "API_KEY=" + canary, "TLS_KEY=" + filepath.Join(dir, "dso.TLS_KEY"), "PLAIN=dso-like"}
	if !slices.Equal(env, want) {
		t.Errorf("env %q, want %q", env, want)
	}

	_, err = SwarmEnv([]string{"DB=dso://app/db"}, dir)
	if err == nil || !strings.Contains(err.Error(), "variable DB") || !strings.Contains(err.Error(), "stack deploy") {
		t.Errorf("missing file: err %v, want one naming the variable and the fix", err)
	}
	if err != nil && strings.Contains(err.Error(), canary) {
		t.Errorf("error holds a value")
	}
}
