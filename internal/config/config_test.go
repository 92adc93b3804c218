package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/secretref"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/invalid and schema/dso.schema.json")

// canary stands for a secret given through the environment; it must never
// appear in an error or in printed output.
const canary = "canary-3f9a1c-NEVER-PRINT"

func testLoader() Loader {
	env := map[string]string{
		"VAULT_TOKEN": canary,
		"EMPTY":       "",
	}
	return Loader{
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Home:      "/home/tester",
	}
}

func parseFile(t *testing.T, path string) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return testLoader().Parse(path, data)
}

// TestInvalidGolden checks, for every file of testdata/invalid, the full list
// of problems against NAME.golden: every problem at once, each with
// file:line:column.
func TestInvalidGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no test files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := parseFile(t, f)
			if err == nil {
				t.Fatalf("%s loaded without error", f)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, want *ValidationError", err)
			}
			got := err.Error() + "\n"
			if strings.Contains(got, canary) {
				t.Fatalf("error shows the value of VAULT_TOKEN:\n%s", got)
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("problems differ from %s\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestValidFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/valid/*.yaml")
	if len(files) == 0 {
		t.Fatal("no test files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := parseFile(t, f)
			if err != nil {
				t.Fatal(err)
			}
			if c.File != f {
				t.Errorf("File = %q, want %q", c.File, f)
			}
		})
	}
}

func TestSeedLocalExample(t *testing.T) {
	c, err := parseFile(t, "testdata/valid/seed-local.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Secrets == nil || len(c.Secrets) != 0 {
		t.Errorf("secrets: {} gave %#v, want an empty list", c.Secrets)
	}
	p := c.Providers["local"]
	if p.VaultFile != "/home/tester/.dso/vault.enc" || p.MasterKeyFile != "/home/tester/.dso/master.key" {
		t.Errorf("~ not expanded: vault_file %q, master_key_file %q", p.VaultFile, p.MasterKeyFile)
	}
	if c.Mode != ModeLocal || c.Defaults.Provider != "local" {
		t.Errorf("mode %q, default provider %q", c.Mode, c.Defaults.Provider)
	}
}

func TestDefaults(t *testing.T) {
	c, err := testLoader().Parse("dso.yaml", []byte(`
providers:
  vault:
    type: vault
    auth:
      params:
        address: https://vault.example.com:8200
secrets:
  - name: app
    mappings:
      DB_PASSWORD: secret/data/db
  - name: files
    inject: {type: file}
    rotation: {strategy: signal}
    mappings:
      TLS_KEY: secret/data/tls
`))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"version", c.Version, "v1"},
		{"mode", c.Mode, ModeLocal},
		{"polling_interval", c.Agent.Watch.PollingInterval.D(), 30 * time.Second},
		{"watch mode", c.Agent.Watch.Mode, WatchPolling},
		{"cache", c.Agent.Cache.Enabled, true},
		{"cache max age", c.Agent.Cache.MaxAge.D(), 24 * time.Hour},
		{"api address", c.Agent.API.Address, "127.0.0.1:8471"},
		{"vault address from auth params", c.Providers["vault"].Address, "https://vault.example.com:8200"},
		{"retry attempts", c.Providers["vault"].Retry.Attempts, 3},
		{"retry backoff", c.Providers["vault"].Retry.Backoff.D(), time.Second},
		{"secret provider", c.Secrets[0].Provider, "vault"},
		{"inject", c.Secrets[0].Inject.Type, InjectEnv},
		{"rotation enabled", c.Secrets[0].Rotation.Enabled, true},
		{"strategy", c.Secrets[0].Rotation.Strategy, StrategyRolling},
		{"file inject", c.Secrets[1].Inject.Type, InjectFile},
		{"signal", c.Secrets[1].Rotation.Signal, "SIGHUP"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}
}

func TestDefaultsInherit(t *testing.T) {
	c, err := testLoader().Parse("dso.yaml", []byte(`
providers:
  a: {type: aws}
  b: {type: azure, address: https://x.vault.azure.net}
defaults:
  provider: b
  inject: {type: file}
  rotation: {enabled: false, strategy: none}
secrets:
  - name: s
    mappings: {K: p}
  - name: t
    provider: a
    inject: {type: env}
    rotation: {enabled: true}
    mappings: {K: p}
`))
	if err != nil {
		t.Fatal(err)
	}
	s, u := c.Secrets[0], c.Secrets[1]
	if s.Provider != "b" || u.Provider != "a" {
		t.Errorf("providers %q %q", s.Provider, u.Provider)
	}
	if want := (Inject{Type: InjectFile}); s.Inject != want {
		t.Errorf("inject %+v, want %+v", s.Inject, want)
	}
	if want := (Inject{Type: InjectEnv}); u.Inject != want {
		t.Errorf("inject %+v, want %+v", u.Inject, want)
	}
	if s.Rotation.Enabled || !u.Rotation.Enabled || s.Rotation.Strategy != StrategyNone {
		t.Errorf("rotation %+v %+v", s.Rotation, u.Rotation)
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "x", "E": ""}
	look := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cases := []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{"${A}", "x", ""},
		{"pre-${A}-post", "pre-x-post", ""},
		{"${B:-dflt}", "dflt", ""},
		{"${E:-dflt}", "dflt", ""},
		{"${E}", "", ""},
		{"$$A $${A} $A $", "$A ${A} $A $", ""},
		{"${B}", "", "environment variable B is not set"},
		{"${A", "", "without a closing"},
		{"${1A}", "", "not a valid variable name"},
		{"${}", "", "not a valid variable name"},
	}
	for _, c := range cases {
		got, _, err := expand(c.in, look)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("expand(%q) error = %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("expand(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestLocate(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	if err := os.WriteFile(second, []byte("secrets: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := Loader{SearchPaths: []string{first, second}}
	if got, err := l.Locate(""); err != nil || got != second {
		t.Errorf("Locate = %q, %v; want %q", got, err, second)
	}
	if err := os.WriteFile(first, []byte("secrets: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Locate(""); err != nil || got != first {
		t.Errorf("Locate = %q, %v; want %q", got, err, first)
	}
	if got, err := l.Locate(second); err != nil || got != second {
		t.Errorf("Locate(explicit) = %q, %v; want %q", got, err, second)
	}
	_, err := l.Locate(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, ErrNoFile) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("explicit missing file: %v", err)
	}
	_, err = Loader{SearchPaths: []string{filepath.Join(dir, "x.yaml")}}.Load("")
	if !errors.Is(err, ErrNoFile) || !strings.Contains(err.Error(), "x.yaml") {
		t.Errorf("nothing found: %v", err)
	}
	c, err := l.Load("")
	if err != nil || c.File != first {
		t.Errorf("Load = %v, %v", c, err)
	}
}

func TestRedacted(t *testing.T) {
	c, err := testLoader().Parse("dso.yaml", []byte(`
providers:
  v:
    type: vault
    address: ${VAULT_TOKEN}
    auth:
      params:
        token: ${VAULT_TOKEN}
        client_secret: literal-secret
        role_id: my-role
agent:
  api: {token: literal-api-token}
secrets: []
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redacted()
	p := r.Providers["v"]
	if p.Address != RedactedText || p.Auth.Params["token"] != RedactedText || p.Auth.Params["client_secret"] != RedactedText || r.Agent.API.Token != RedactedText {
		t.Errorf("not redacted: %+v %+v", p, r.Agent.API)
	}
	if p.Auth.Params["role_id"] != "my-role" {
		t.Errorf("role_id = %q, want it shown", p.Auth.Params["role_id"])
	}
	if c.Providers["v"].Auth.Params["token"] != canary {
		t.Error("Redacted changed the original")
	}
}

func TestEditDistanceSuggest(t *testing.T) {
	names := []string{"polling_interval", "mode"}
	if got := suggest("polling_intervall", names); got != ` (did you mean "polling_interval"?)` {
		t.Errorf("suggest = %q", got)
	}
	if got := suggest("zzzzzz", names); got != "" {
		t.Errorf("suggest = %q, want none", got)
	}
}

// TestTagsAgree keeps the json tags equal to the yaml tags.
func TestTagsAgree(t *testing.T) {
	for _, v := range []any{Config{}, Provider{}, Auth{}, Retry{}, TLS{}, Agent{}, Watch{}, AgentRotation{}, API{}, Defaults{}, Secret{}, Inject{}, Rotation{}, Targets{}} {
		checkTags(t, v)
	}
}

func TestSchemaCurrent(t *testing.T) {
	const path = "../../schema/dso.schema.json"
	got := JSONSchema()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s is not current: run go generate ./internal/config", path)
	}
}

// BenchmarkParse measures loading the README's AWS example (restart in
// place of rolling).
func BenchmarkParse(b *testing.B) {
	data, err := os.ReadFile("testdata/valid/aws-restart.yaml")
	if err != nil {
		b.Fatal(err)
	}
	l := testLoader()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Parse("dso.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestInjectPermInherits(t *testing.T) {
	c, err := testLoader().Parse("dso.yaml", []byte(`
providers:
  a: {type: local}
defaults:
  inject: {gid: 70, mode: "0440"}
secrets:
  - name: file
    inject: {type: file, uid: 0}
    mappings: {K: p/k}
  - name: own-mode
    inject: {type: file, mode: 0600}
    mappings: {L: p/l}
  - name: env
    mappings: {M: p/m}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []secretref.Perm{
		{UID: 0, GID: 70, Mode: 0o440, HasUID: true, HasGID: true, HasMode: true},
		{GID: 70, Mode: 0o600, HasGID: true, HasMode: true},
		{}, // an env secret has no file
	}
	for i, w := range want {
		if got := c.Secrets[i].Inject.Perm(); got != w {
			t.Errorf("secret %s: perm %+v, want %+v", c.Secrets[i].Name, got, w)
		}
	}
}

// TestPositionsQuoteNoContent: what the agent logs of a file that is not a
// dso.yaml (here, lines like /etc/shadow's) names positions, never text.
func TestPositionsQuoteNoContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(path, []byte("root:$6$CANARYHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "CANARYHASH") {
		t.Fatalf("config validate's own error should quote the key: %v", err)
	}
	got := Positions(err)
	if !errors.Is(got, ErrInvalid) || strings.Contains(got.Error(), "CANARYHASH") || strings.Contains(got.Error(), "daemon") || !strings.Contains(got.Error(), "line 2 column 1") {
		t.Fatalf("Positions = %v", got)
	}
}
