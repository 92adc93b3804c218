package resolve_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider/awssm/awssmtest"
	"github.com/dso-project/dso/internal/provider/providertest"
	"github.com/dso-project/dso/internal/resolve"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/testbed"
	"github.com/dso-project/dso/internal/vaultfile"
)

// startVault runs a Vault dev server for the test: a missing binary fails
// under CI and skips elsewhere.
func startVault(t *testing.T) *providertest.VaultServer {
	t.Helper()
	bin, err := providertest.VaultBinary()
	if err != nil {
		testbed.Unavailable(t, "%v", err)
	}
	s, err := providertest.StartVault(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// TestDefaultBuildsEveryType builds one provider of each type from a
// dso.yaml, then resolves a reference through each backend that runs here
// (the Azure test server needs a custom dialer, which dso.yaml cannot give).
func TestDefaultBuildsEveryType(t *testing.T) {
	dir := t.TempDir()
	vs := startVault(t)
	root, err := vaultapi.NewClient(&vaultapi.Config{Address: vs.Addr})
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(vs.Token)
	if _, err := root.Logical().Write("secret/data/app/db", map[string]any{"data": map[string]any{"password": "from-vault"}}); err != nil {
		t.Fatal(err)
	}

	aws := awssmtest.Start(t, false)
	aws.Put(t, "app/api", []byte(`{"key":"from-aws"}`))

	vaultFile, keyFile := newVault(t, dir, "app/local", "from-local")

	plug := filepath.Join(dir, "dso-provider-example")
	copyFile(t, testbed.GoBinary(t, "./cmd/dso-provider-example"), plug)
	b, _ := os.ReadFile(plug)
	sum := sha256.Sum256(b)
	data := filepath.Join(dir, "plugdata")
	os.MkdirAll(filepath.Join(data, "app"), 0o700)
	os.WriteFile(filepath.Join(data, "app", "plug"), []byte("from-plugin"), 0o600)

	yaml := `providers:
  loc:
    type: local
    vault_file: ` + vaultFile + `
    master_key_file: ` + keyFile + `
  hv:
    type: vault
    address: ` + vs.Addr + `
    auth: {method: token, params: {token: "${TEST_VAULT_TOKEN}"}}
  sm:
    type: aws
    address: ` + aws.KumoURL + `
    region: ` + awssmtest.Region + `
    auth: {method: access_key, params: {access_key_id: AKIDTEST, secret_access_key: "${TEST_AWS_KEY}"}}
  kv:
    type: azure
    address: https://dso-test.vault.azure.net
    auth: {method: client_secret, params: {tenant_id: 00000000-0000-0000-0000-000000000000, client_id: app, client_secret: x}}
  ext:
    type: plugin
    plugin: ` + plug + `
    auth: {params: {sha256: ` + hex.EncodeToString(sum[:]) + `, dir: ` + data + `}}
defaults:
  provider: loc
secrets: []
`
	env := map[string]string{"TEST_VAULT_TOKEN": vs.Token, "TEST_AWS_KEY": "test-secret-key"}
	l := config.Loader{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }, Home: dir}
	cfg, err := l.Parse(filepath.Join(dir, "dso.yaml"), []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	set, err := resolve.Default().Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for name, typ := range map[string]config.ProviderType{"loc": config.ProviderLocal, "hv": config.ProviderVault, "sm": config.ProviderAWS, "kv": config.ProviderAzure, "ext": config.ProviderPlugin} {
		if got := set.Type(name); got != typ {
			t.Errorf("provider %s has type %q, want %q", name, got, typ)
		}
	}
	want := map[string]string{
		"dso://app/local": "from-local",
		"dso://secret/data/app/db?provider=hv#password": "from-vault",
		"dso://app/api?provider=sm#key":                 "from-aws",
		"dso://app/plug?provider=ext":                   "from-plugin",
	}
	var refs []secretref.Ref
	for s := range want {
		r, err := secretref.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	got, err := set.Fetch(context.Background(), refs)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		if v := string(got[r].Value); v != want[r.String()] {
			t.Errorf("%s = %q, want %q", r, v, want[r.String()])
		}
	}
}

// TestDefaultRefusesUnknownType: a type no builder knows fails the build,
// naming the provider and the type.
func TestDefaultRefusesUnknownType(t *testing.T) {
	cfg := &config.Config{Providers: map[string]config.Provider{"g": {Type: "gcp"}}}
	_, err := resolve.Default().Build(cfg)
	if err == nil || !strings.Contains(err.Error(), `provider "g"`) || !strings.Contains(err.Error(), `"gcp"`) {
		t.Fatalf("Build = %v, want an error naming provider g and type gcp", err)
	}
}

// TestDefaultReportsBadEntries: an entry its constructor refuses fails the
// build with a nil set and an error naming the provider.
func TestDefaultReportsBadEntries(t *testing.T) {
	for typ, pc := range map[config.ProviderType]config.Provider{
		config.ProviderVault:  {Type: config.ProviderVault, Address: "http://127.0.0.1:1", Auth: config.Auth{Method: "kerberos"}},
		config.ProviderAWS:    {Type: config.ProviderAWS, Region: "us-east-1", Auth: config.Auth{Method: "access_key"}},
		config.ProviderAzure:  {Type: config.ProviderAzure, Address: "http://not-https.example"},
		config.ProviderPlugin: {Type: config.ProviderPlugin, Plugin: "../escape"},
	} {
		set, err := resolve.Default().Build(&config.Config{Providers: map[string]config.Provider{"bad": pc}})
		if err == nil || set != nil || !strings.Contains(err.Error(), `provider "bad"`) {
			t.Errorf("type %s: Build = %v, %v; want a nil set and an error naming provider bad", typ, set, err)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// A system service has no $HOME: a local provider that names its vault and
// key file must not need one.
func TestLocalProviderNeedsNoHome(t *testing.T) {
	vaultFile, keyFile := newVault(t, t.TempDir(), "app/x", "x-value")
	t.Setenv("HOME", "")
	t.Setenv("DSO_VAULT_FILE", "")
	t.Setenv("DSO_MASTER_KEY_FILE", "")
	set, err := resolve.Default().Build(&config.Config{Providers: map[string]config.Provider{
		"local": {Type: config.ProviderLocal, VaultFile: vaultFile, MasterKeyFile: keyFile},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	ref := secretref.MustParse("dso://app/x")
	got, err := set.Fetch(context.Background(), []secretref.Ref{ref})
	if err != nil || string(got[ref].Value) != "x-value" {
		t.Errorf("fetch without $HOME: %q, %v", got[ref].Value, err)
	}
}

// newVault creates a local vault in dir holding name = value, and its key
// file.
func newVault(t *testing.T, dir, name, value string) (vaultFile, keyFile string) {
	t.Helper()
	raw, _ := vaultfile.GenerateKey()
	keyFile = filepath.Join(dir, "master.key")
	if err := vaultfile.WriteKeyFile(keyFile, raw); err != nil {
		t.Fatal(err)
	}
	k, _ := vaultfile.RawKey(raw, "test")
	vaultFile = filepath.Join(dir, "vault.enc")
	if err := vaultfile.Create(vaultFile, k); err != nil {
		t.Fatal(err)
	}
	if err := vaultfile.Update(vaultFile, k, func(v *vaultfile.Vault) error { _, err := v.Set(name, []byte(value)); return err }); err != nil {
		t.Fatal(err)
	}
	return vaultFile, keyFile
}
