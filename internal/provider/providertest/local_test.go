package providertest_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/dso-project/dso/internal/provider/local"
	"github.com/dso-project/dso/internal/provider/providertest"
	"github.com/dso-project/dso/internal/vaultfile"
)

// localVault is a fresh local vault file with a raw key.
type localVault struct {
	path string
	key  vaultfile.Key
}

func newLocalVault(t testing.TB) *localVault {
	t.Helper()
	raw, err := vaultfile.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	key, err := vaultfile.RawKey(raw, "test key")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vault.enc")
	if err := vaultfile.Create(path, key); err != nil {
		t.Fatal(err)
	}
	return &localVault{path: path, key: key}
}

func (l *localVault) put(t testing.TB, name string, value []byte) {
	t.Helper()
	if err := vaultfile.Update(l.path, l.key, func(v *vaultfile.Vault) error {
		_, err := v.Set(name, value)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestConformanceLocal(t *testing.T) {
	l := newLocalVault(t)
	const noServer = "the local vault is a file on this host, with no server or access policy"
	providertest.Run(t, providertest.Fixture{
		Provider: local.New(l.path, l.key),
		Put: func(t *testing.T, name string, value []byte) (string, string) {
			l.put(t, "app/"+name, value)
			return "app/" + name, ""
		},
		PutJSON: func(t *testing.T, name string, obj map[string]any) string {
			b, _ := json.Marshal(obj)
			l.put(t, "app/"+name, b)
			return "app/" + name
		},
		Path:   func(name string) string { return "app/" + name },
		Binary: true,
		NotApplicable: map[string]string{
			"denied":                       noServer,
			"unreachable server":           noServer,
			"slow server hits the timeout": noServer,
		},
	})
}

// vaultfileUpdate sets several entries in one atomic update.
func vaultfileUpdate(l *localVault, fn func(set func(string, []byte) error) error) error {
	return vaultfile.Update(l.path, l.key, func(v *vaultfile.Vault) error {
		return fn(func(name string, value []byte) error {
			_, err := v.Set(name, value)
			return err
		})
	})
}
