package azurekv_test

import (
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider/azurekv"
)

func TestFromConfig(t *testing.T) {
	_, err := azurekv.FromConfig("azure", config.Provider{Address: "http://kv.example", Auth: config.Auth{Method: "managed_identity"}})
	if err == nil || !strings.Contains(err.Error(), "https://NAME.vault.azure.net") {
		t.Errorf("http vault URL: %v", err)
	}
	_, err = azurekv.FromConfig("azure", config.Provider{Address: "https://x.vault.azure.net", Auth: config.Auth{Method: "kerberos"}})
	if err == nil || !strings.Contains(err.Error(), `auth method "kerberos"`) {
		t.Errorf("unknown method: %v", err)
	}
}
