package agent

import (
	"slices"
	"testing"

	"github.com/dso-project/dso/internal/config"
)

// TestLocalVaultsEachOnce: a vault named twice (DSO_VAULT_FILE and
// dso.yaml, as the quick start does) is watched once: two watches of one
// file triggered every change twice.
func TestLocalVaultsEachOnce(t *testing.T) {
	cfg := &config.Config{Providers: map[string]config.Provider{
		"demo":  {Type: config.ProviderLocal, VaultFile: "/v/demo/../demo/vault.enc"},
		"other": {Type: config.ProviderLocal, VaultFile: "/v/other.enc"},
	}}
	env := map[string]string{"DSO_VAULT_FILE": "/v/demo/vault.enc", "HOME": "/home/u"}
	got := localVaults(cfg, func(k string) string { return env[k] })
	slices.Sort(got)
	if want := []string{"/v/demo/vault.enc", "/v/other.enc"}; !slices.Equal(got, want) {
		t.Errorf("localVaults = %q, want %q", got, want)
	}
}
