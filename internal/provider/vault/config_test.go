package vault_test

import (
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider/vault"
)

func TestFromConfig(t *testing.T) {
	ok := config.Provider{Type: config.ProviderVault, Auth: config.Auth{Method: "token", Params: map[string]string{"address": "https://vault.example.com:8200", "token": "t"}}}
	if _, err := vault.FromConfig("vault", ok); err != nil {
		t.Errorf("seed's token example: %v", err)
	}
	ar := config.Provider{Address: "http://x", Auth: config.Auth{Method: "approle", Params: map[string]string{"role_id": "r", "secret_id": "s"}}}
	if _, err := vault.FromConfig("v", ar); err != nil {
		t.Errorf("approle: %v", err)
	}
	for method, want := range map[string]string{"ldap": `auth method "ldap"`} {
		_, err := vault.FromConfig("v", config.Provider{Address: "http://x", Auth: config.Auth{Method: method}})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("method %s: %v", method, err)
		}
	}
}
