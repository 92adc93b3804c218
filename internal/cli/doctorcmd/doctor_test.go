package doctorcmd_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/dso-project/dso/internal/agentctl"
	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/cli/doctorcmd"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/iostreams"
	"github.com/dso-project/dso/internal/provider/awssm/awssmtest"
	"github.com/dso-project/dso/internal/provider/providertest"
	"github.com/dso-project/dso/internal/testbed"
)

// canary is the value of every secret the tests store: it must never show.
const canary = "dso-canary-doctor-7c1e55"

var (
	vault      *providertest.VaultServer
	vaultSkip  string
	readerTok  string
	vaultAdmin *vaultapi.Client
)

func TestMain(m *testing.M) {
	bin, err := providertest.VaultBinary()
	if err != nil {
		if testbed.InCI() {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			os.Exit(1)
		}
		vaultSkip = err.Error()
		os.Exit(m.Run())
	}
	if vault, err = providertest.StartVault(bin); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	if err := setupVault(); err != nil {
		vault.Stop()
		fmt.Fprintln(os.Stderr, "FAIL: vault setup:", err)
		os.Exit(1)
	}
	code := m.Run()
	vault.Stop()
	os.Exit(code)
}

// setupVault stores secret/app/db and makes a token that may read
// secret/app/* only.
func setupVault() error {
	c, err := vaultapi.NewClient(&vaultapi.Config{Address: vault.Addr})
	if err != nil {
		return err
	}
	c.SetToken(vault.Token)
	vaultAdmin = c
	if _, err := c.Logical().Write("secret/data/app/db", map[string]any{"data": map[string]any{"password": canary}}); err != nil {
		return err
	}
	policy := `path "secret/data/app/*" { capabilities = ["read"] }
path "secret/metadata/app/*" { capabilities = ["read"] }`
	if err := c.Sys().PutPolicy("app-reader", policy); err != nil {
		return err
	}
	s, err := c.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"app-reader"}, TTL: "1h"})
	if err != nil {
		return err
	}
	readerTok = s.Auth.ClientToken
	return nil
}

func needVault(t *testing.T) {
	t.Helper()
	if vault == nil {
		t.Skip(vaultSkip)
	}
}

// host gives the test an isolated user: HOME, a docker CLI config with the
// docker-dso and Compose plugins installed, and dso-init found by DSO_INIT.
func host(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	plugins := filepath.Join(home, ".docker", "cli-plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(testbed.GoBinary(t, "./cmd/docker-dso"), filepath.Join(plugins, "docker-dso")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(testbed.ComposeBinary(t), filepath.Join(plugins, "docker-compose")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", filepath.Join(home, ".docker"))
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("DSO_INIT", testbed.GoBinary(t, "./cmd/dso-init"))
	return home
}

// doctor runs `docker dso doctor --json ARGS...` in-process with the
// configuration at cfg and returns its report and exit code.
func doctor(t *testing.T, cfg string, args ...string) (doctorcmd.Report, int, string) {
	t.Helper()
	ios, _, out, errOut := iostreams.Test()
	f := &cmdutil.Factory{IO: ios, ConfigPath: cfg}
	cmd := doctorcmd.NewCmd(f, nil)
	cmd.SetArgs(append([]string{"--json"}, args...))
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.Execute()
	code := 0
	var ee *cmdutil.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.Code
	case err != nil:
		t.Fatalf("doctor: %v", err)
	}
	all := out.String() + errOut.String()
	if strings.Contains(all, canary) {
		t.Fatalf("doctor printed a secret value:\n%s", all)
	}
	var rep doctorcmd.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("doctor --json printed no report (%v):\n%s", err, all)
	}
	return rep, code, all
}

// finding returns the finding whose check starts with prefix.
func finding(t *testing.T, rep doctorcmd.Report, prefix string) doctorcmd.Finding {
	t.Helper()
	for _, f := range rep.Findings {
		if strings.HasPrefix(f.Check, prefix) {
			return f
		}
	}
	t.Fatalf("no finding %q in %+v", prefix, rep.Findings)
	return doctorcmd.Finding{}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dso.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHealthyHost: on a host with everything in place, a Vault and an AWS
// provider both answer, every mapped secret is readable, and doctor exits 0.
func TestHealthyHost(t *testing.T) {
	needVault(t)
	testbed.Docker(t)
	host(t)
	aws := awssmtest.Start(t, false)
	aws.Put(t, "app/api_key", []byte(canary))
	t.Setenv("TEST_VAULT_TOKEN", readerTok)
	cfg := writeConfig(t, `
providers:
  hv:
    type: vault
    address: `+vault.Addr+`
    auth: {method: token, params: {token: "${TEST_VAULT_TOKEN}"}}
  sm:
    type: aws
    address: `+aws.KumoURL+`
    region: `+awssmtest.Region+`
    auth: {method: access_key, params: {access_key_id: AKIDTEST, secret_access_key: test-secret-key}}
defaults:
  provider: hv
secrets:
  - name: db
    mappings:
      DB_PASSWORD: secret/data/app/db/password
  - name: api
    provider: sm
    mappings:
      API_KEY: app/api_key
`)
	for _, level := range []string{"basic", "full"} {
		rep, code, out := doctor(t, cfg, "--level", level)
		if code != 0 || rep.Failures != 0 {
			t.Errorf("level %s: exit %d with %d failure(s):\n%s", level, code, rep.Failures, out)
		}
		for _, check := range []string{"Docker engine", "Docker Compose v2", "docker dso plugin", "dso-init", "dso.yaml", `provider "hv" (vault)`, `provider "sm" (aws)`} {
			if f := finding(t, rep, check); f.Status != doctorcmd.StatusOK {
				t.Errorf("level %s: %s: %s (%s)", level, check, f.Status, f.Detail)
			}
		}
		if level == "full" {
			for _, check := range []string{`secret "db" readable`, `secret "api" readable`} {
				if f := finding(t, rep, check); f.Status != doctorcmd.StatusOK {
					t.Errorf("%s: %s (%s)", check, f.Status, f.Detail)
				}
			}
			if f := finding(t, rep, "agent running"); f.Status != doctorcmd.StatusWarn {
				t.Errorf("with no agent running (local mode): %s, want warn", f.Status)
			}
		}
	}
	if !strings.Contains(finding(t, doctorReport(t, cfg), "Docker engine").Detail, "API 1.") {
		t.Errorf("the engine finding does not give the API version")
	}
}

func doctorReport(t *testing.T, cfg string) doctorcmd.Report {
	rep, _, _ := doctor(t, cfg)
	return rep
}

// TestUnreachableProvider: a provider nobody answers for fails, named, with
// the fix, and the exit code says backend (6), not config.
func TestUnreachableProvider(t *testing.T) {
	host(t)
	dead := providertest.DeadAddr(t)
	cfg := writeConfig(t, `
providers:
  corp-vault:
    type: vault
    address: http://`+dead+`
    timeout: 2s
    retry: {attempts: 1}
    auth: {method: token, params: {token: whatever}}
secrets: []
`)
	rep, code, out := doctor(t, cfg)
	if code != cmdutil.ExitBackend {
		t.Errorf("exit %d, want %d:\n%s", code, cmdutil.ExitBackend, out)
	}
	f := finding(t, rep, `provider "corp-vault"`)
	if f.Status != doctorcmd.StatusFail || !strings.Contains(f.Detail, `provider "corp-vault"`) || !strings.Contains(f.Detail, "unreachable") {
		t.Errorf("finding: %+v; want a failure naming the provider as unreachable", f)
	}
	if !strings.Contains(f.Fix, "providers.corp-vault.address") || !strings.Contains(f.Fix, "curl http://"+dead+"/v1/sys/health") {
		t.Errorf("fix %q does not say what to check", f.Fix)
	}
}

// TestDeniedAndMissing: a token that may not read a path fails with the
// token fix; a mapped secret that does not exist fails at level full.
func TestDeniedAndMissing(t *testing.T) {
	needVault(t)
	host(t)
	t.Setenv("TEST_VAULT_TOKEN", readerTok)
	cfg := writeConfig(t, `
providers:
  hv:
    type: vault
    address: `+vault.Addr+`
    auth: {method: token, params: {token: "${TEST_VAULT_TOKEN}"}}
  bad:
    type: vault
    address: `+vault.Addr+`
    retry: {attempts: 1}
    auth: {method: token, params: {token: not-a-token}}
secrets:
  - name: db
    provider: hv
    mappings:
      DB_PASSWORD: secret/data/app/db/password
      DB_USER: secret/data/app/nope
`)
	rep, code, out := doctor(t, cfg, "--level", "full")
	if code != cmdutil.ExitBackend {
		t.Errorf("exit %d, want %d:\n%s", code, cmdutil.ExitBackend, out)
	}
	if f := finding(t, rep, `provider "hv"`); f.Status != doctorcmd.StatusOK {
		t.Errorf("provider hv: %+v", f)
	}
	bad := finding(t, rep, `provider "bad"`)
	if bad.Status != doctorcmd.StatusFail || !strings.Contains(bad.Detail, "denied") || !strings.Contains(bad.Fix, "providers.bad.auth.params.token") {
		t.Errorf("a refused token: %+v", bad)
	}
	db := finding(t, rep, `secret "db"`)
	if db.Status != doctorcmd.StatusFail || !strings.Contains(db.Detail, "DB_USER") || strings.Contains(db.Detail, "DB_PASSWORD") || !strings.Contains(db.Fix, `create "secret/data/app/nope" in provider "hv"`) {
		t.Errorf("a missing mapped secret: %+v", db)
	}
}

// TestInvalidConfig: a dso.yaml that does not load fails with exit code 3
// and its problems; no provider is checked.
func TestInvalidConfig(t *testing.T) {
	host(t)
	cfg := writeConfig(t, "providers:\n  x:\n    type: gcp\nsecrets: []\n")
	rep, code, out := doctor(t, cfg)
	if code != cmdutil.ExitConfig {
		t.Errorf("exit %d, want %d:\n%s", code, cmdutil.ExitConfig, out)
	}
	f := finding(t, rep, "dso.yaml")
	if f.Status != doctorcmd.StatusFail || !strings.Contains(f.Detail, "dso.yaml:3:") || !strings.Contains(f.Fix, "config validate") {
		t.Errorf("finding: %+v", f)
	}
	for _, f := range rep.Findings {
		if strings.HasPrefix(f.Check, "provider") {
			t.Errorf("a provider was checked with an invalid dso.yaml: %+v", f)
		}
	}
}

// TestAgentAndSocket: with the user's local agent running, level full finds
// it answering and its socket 0660; a socket others may use fails.
func TestAgentAndSocket(t *testing.T) {
	testbed.Docker(t)
	home := host(t)
	cmd := exec.Command(testbed.GoBinary(t, "./cmd/docker-dso"), "agent", "--local")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Env = append(os.Environ(), "DSO_API_ADDR=127.0.0.1:0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lock := filepath.Join(home, ".dso", "run", "agent.lock")
	sock := filepath.Join(home, ".dso", "run", "dso.sock")
	for deadline := time.Now().Add(15 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil && agentctl.Held(lock) {
			if _, err := api.NewClient(sock).Health(t.Context()); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the local agent did not start:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cfg := writeConfig(t, "mode: local\nsecrets: []\n")
	rep, _, _ := doctor(t, cfg, "--level", "full")
	if f := finding(t, rep, "agent running"); f.Status != doctorcmd.StatusOK || !strings.Contains(f.Detail, "local agent") || !strings.Contains(f.Detail, sock) {
		t.Errorf("agent: %+v", f)
	}
	if f := finding(t, rep, "agent socket permissions"); f.Status != doctorcmd.StatusOK || !strings.Contains(f.Detail, "mode 0660") {
		t.Errorf("socket: %+v", f)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	rep, code, _ := doctor(t, cfg, "--level", "full")
	if f := finding(t, rep, "agent socket permissions"); f.Status != doctorcmd.StatusFail || !strings.Contains(f.Fix, "chmod 0660 "+sock) {
		t.Errorf("a world-writable socket: %+v", f)
	}
	if code != cmdutil.ExitBackend {
		t.Errorf("exit %d with a failing socket check, want %d", code, cmdutil.ExitBackend)
	}
}

func TestFlags(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	f := &cmdutil.Factory{IO: ios}
	var got *doctorcmd.Options
	for args, want := range map[string]doctorcmd.Options{
		"":                    {Level: "basic"},
		"--level full --json": {Level: "full", JSON: true},
	} {
		cmd := doctorcmd.NewCmd(f, func(o *doctorcmd.Options) error { got = o; return nil })
		cmd.SetArgs(strings.Fields(args))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if got.Level != want.Level || got.JSON != want.JSON {
			t.Errorf("%q: level %q json %v, want %q %v", args, got.Level, got.JSON, want.Level, want.JSON)
		}
	}
	for _, args := range []string{"--level deep", "extra"} {
		cmd := doctorcmd.NewCmd(f, func(*doctorcmd.Options) error { t.Fatal("ran"); return nil })
		cmd.SetArgs(strings.Fields(args))
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		var ee *cmdutil.ExitError
		if err := cmd.Execute(); !errors.As(err, &ee) || ee.Code != cmdutil.ExitUsage {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
