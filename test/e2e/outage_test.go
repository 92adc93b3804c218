package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/testbed"
)

// vaultProject is a project whose api service takes DB_PASSWORD from
// Vault, with the dso.yaml's agent section agentYAML.
func vaultProject(t *testing.T, vaultAddr, agentYAML string) (dir, project string) {
	t.Helper()
	dir = writeProject(t, map[string]string{
		"dso.yaml": `version: v1
mode: local
providers:
  vault:
    type: vault
    address: ` + vaultAddr + `
    auth:
      method: token
      params:
        token: ${VAULT_TOKEN}
agent:
` + agentYAML + `secrets: {}
`,
		"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    environment:
      DB_PASSWORD: dso://secret/data/app/db?provider=vault#password
`})
	return dir, testbed.Project(t, dir)
}

// restartAndTime restarts the container of service api and returns how
// long after `docker restart` returned the app served want.
func restartAndTime(t *testing.T, u *user, project, want string) time.Duration {
	t.Helper()
	u.must("", nil, "restart", serviceContainer(t, project, "api"))
	restarted := time.Now()
	var took time.Duration
	waitFor(t, "the restarted app to serve its secret", func() bool {
		_, got, ok := answer(t, project, "api", "/env/DB_PASSWORD")
		took = time.Since(restarted)
		return ok && got == want
	})
	return took
}

// TestCacheServesRestartWhileVaultIsDown: Vault is stopped, then the
// container restarts: the agent serves it from its cache, and status,
// /health and /metrics say the value came from the cache.
func TestCacheServesRestartWhileVaultIsDown(t *testing.T) {
	u := newUser(t)
	vs, vc := startVault(t)
	v := canary(t, "cached")
	vaultPut(t, vc, "app/db", map[string]any{"password": string(v)})
	dir, project := vaultProject(t, vs.Addr, "  cache:\n    max_age: 1h\n  api:\n    open: [metrics]\n")
	u.env = append(u.env, "VAULT_TOKEN="+vs.Token) // for up and the agent
	ag := startAgent(t, u, filepath.Join(dir, "dso.yaml"))
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	waitFor(t, "the Vault value", func() bool {
		_, got, ok := answer(t, project, "api", "/env/DB_PASSWORD")
		return ok && got == string(v)
	})

	vs.Stop()
	took := restartAndTime(t, u, project, string(v))
	t.Logf("Vault down: the restarted container served its secret from the cache %s after docker restart returned", took.Round(time.Millisecond))

	s, raw := status(t, u)
	if len(s.Containers) != 1 || s.Containers[0].FromCache["vault:secret/data/app/db"].IsZero() {
		t.Errorf("status does not say the value came from the cache:\n%s", raw)
	}
	code, health := ag.get(t, "/health")
	if code != http.StatusServiceUnavailable || !strings.Contains(health, "from the cache") {
		t.Errorf("GET /health = %d %s; want 503 naming the value served from the cache", code, health)
	}
	_, metrics := ag.get(t, "/metrics")
	if !strings.Contains(metrics, "dso_cache_served_total 1") || !strings.Contains(metrics, "dso_containers_from_cache 1") {
		t.Errorf("/metrics does not count the value served from the cache:\n%s", grepLines(metrics, "dso_cache", "dso_containers"))
	}
	logs := u.run("", nil, "logs", serviceContainer(t, project, "api"))
	assertNoLeak(t, u, [][]byte{v}, raw, health, metrics, logs.output(), ag.logText())
}

// TestCacheOlderThanMaxAgeIsNotServed: with max_age 2s and no successful
// poll to confirm the value, a restart after Vault stopped gets nothing,
// and the container's log says why: Vault unreachable, the last value too
// old. status lists the container as waiting.
func TestCacheOlderThanMaxAgeIsNotServed(t *testing.T) {
	u := newUser(t)
	vs, vc := startVault(t)
	v := canary(t, "stale")
	vaultPut(t, vc, "app/db", map[string]any{"password": string(v)})
	dir, project := vaultProject(t, vs.Addr, "  cache:\n    max_age: 2s\n  watch:\n    polling_interval: 1h\n")
	u.env = append(u.env, "VAULT_TOKEN="+vs.Token) // for up and the agent
	startAgent(t, u, filepath.Join(dir, "dso.yaml"))
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	waitFor(t, "the Vault value", func() bool {
		_, got, ok := answer(t, project, "api", "/env/DB_PASSWORD")
		return ok && got == string(v)
	})
	vs.Stop()
	time.Sleep(3 * time.Second) // the cached value passes its maximum age

	id := serviceContainer(t, project, "api")
	u.must("", nil, "restart", id)
	var logs string
	waitFor(t, "the init to say why its secrets are late", func() bool {
		logs = u.run("", nil, "logs", id).output()
		return strings.Contains(logs, "waiting for secrets")
	})
	for _, want := range []string{`provider "vault"`, "backend unreachable", "older than agent.cache.max_age (2s)"} {
		if !strings.Contains(logs, want) {
			t.Errorf("docker logs do not say %q:\n%s", want, logs)
		}
	}
	if _, _, ok := answer(t, project, "api", "/env/DB_PASSWORD"); ok {
		t.Error("the app runs with a value older than the cache's maximum age")
	}
	s, raw := status(t, u)
	if len(s.Waiting) != 1 || !strings.Contains(s.Waiting[0].Reason, "backend unreachable") {
		t.Errorf("status does not list the container waiting, with why:\n%s", raw)
	}
	assertNoLeak(t, u, [][]byte{v}, logs, raw)
}

// TestLocalVaultUnreadableDuringRestart: with the cache off, the local
// vault file is gone for a few seconds while the container restarts; the
// agent retries, tells the init why, and serves the container once the
// file is back.
func TestLocalVaultUnreadableDuringRestart(t *testing.T) {
	u := newUser(t)
	v := canary(t, "local")
	u.initVault(map[string][]byte{"app/db": v})
	dir := writeProject(t, map[string]string{
		"dso.yaml": "version: v1\nmode: local\nagent:\n  cache: false\nsecrets: {}\n",
		"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    environment:
      DB_PASSWORD: dso://app/db
`})
	project := testbed.Project(t, dir)
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	waitFor(t, "the value", func() bool {
		_, got, ok := answer(t, project, "api", "/env/DB_PASSWORD")
		return ok && got == string(v)
	})

	vault := filepath.Join(u.home, ".dso", "vault.enc")
	if err := os.Rename(vault, vault+".away"); err != nil {
		t.Fatal(err)
	}
	id := serviceContainer(t, project, "api")
	u.must("", nil, "restart", id)
	waitFor(t, "the init to say why its secrets are late", func() bool {
		return strings.Contains(u.run("", nil, "logs", id).output(), "waiting for secrets")
	})
	time.Sleep(3 * time.Second) // the vault stays away a while
	if err := os.Rename(vault+".away", vault); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitFor(t, "the app to get its secret once the vault is back", func() bool {
		_, got, ok := answer(t, project, "api", "/env/DB_PASSWORD")
		return ok && got == string(v)
	})
	t.Logf("local vault back: the waiting container served %s later", time.Since(back).Round(time.Millisecond))
	assertNoLeak(t, u, [][]byte{v}, u.run("", nil, "logs", id).output(), agentLog(t, u))
}

// TestVaultShortTTLToken: the agent reads Vault with a renewable token
// whose TTL is 5 seconds; after several TTLs the token is still alive and
// a restart (cache off) gets the value from Vault.
func TestVaultShortTTLToken(t *testing.T) {
	u := newUser(t)
	vs, vc := startVault(t)
	v := canary(t, "ttl")
	vaultPut(t, vc, "app/db", map[string]any{"password": string(v)})
	if err := vc.Sys().PutPolicy("app-read", `path "secret/*" { capabilities = ["read", "list"] }`); err != nil {
		t.Fatal(err)
	}
	renewable := true
	tok, err := vc.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"app-read"}, TTL: "5s", Renewable: &renewable, NoParent: true})
	if err != nil {
		t.Fatal(err)
	}
	token := tok.Auth.ClientToken
	dir, project := vaultProject(t, vs.Addr, "  cache: false\n  watch:\n    polling_interval: 1s\n")
	u.env = append(u.env, "VAULT_TOKEN="+token) // for up and the agent
	startAgent(t, u, filepath.Join(dir, "dso.yaml"))
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	waitFor(t, "the Vault value", func() bool {
		_, got, ok := answer(t, project, "api", "/env/DB_PASSWORD")
		return ok && got == string(v)
	})

	time.Sleep(20 * time.Second) // four TTLs
	look, err := vc.Auth().Token().Lookup(token)
	if err != nil {
		t.Fatalf("the agent's token is gone after four TTLs: %v", err)
	}
	ttl, _ := look.TokenTTL()
	t.Logf("after 20s the agent's 5s token has %s left", ttl)
	s, raw := status(t, u)
	if sec := secretStatus(t, s, "vault:secret/data/app/db"); sec.Failing || time.Since(sec.LastCheck) > 5*time.Second {
		t.Errorf("the agent no longer reads Vault after four TTLs:\n%s", raw)
	}
	restartAndTime(t, u, project, string(v))
}

// TestFileWatchErrorKeepsDaemonUp: the directory of a local vault the
// agent watches turns into a file, so that watching it fails with a stat
// error: the agent stays up, status and /health say what is degraded, and
// it recovers once the directory is back.
func TestFileWatchErrorKeepsDaemonUp(t *testing.T) {
	u := newUser(t)
	u.initVault(map[string][]byte{"app/db": canary(t, "watch")})
	vdir := filepath.Join(t.TempDir(), "vaults")
	if err := os.Mkdir(vdir, 0o700); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(u.home, ".dso", "vault.enc"), filepath.Join(vdir, "vault.enc"))
	cfg := filepath.Join(t.TempDir(), "dso.yaml")
	if err := os.WriteFile(cfg, []byte("version: v1\nmode: local\nproviders:\n  team:\n    type: local\n    vault_file: "+filepath.Join(vdir, "vault.enc")+
		"\n    master_key_file: "+filepath.Join(u.home, ".dso", "master.key")+"\nsecrets: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ag := startAgent(t, u, cfg)
	pid := agentPID(t, u)

	if err := os.Rename(vdir, vdir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vdir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var problems string
	waitFor(t, "/health to report the failing file watch", func() bool {
		code, body := ag.get(t, "/health")
		problems = body
		return code == http.StatusServiceUnavailable && strings.Contains(body, "watch "+filepath.Join(vdir, "vault.enc"))
	})
	if !strings.Contains(problems, "not a directory") {
		t.Errorf("/health does not say why the watch fails: %s", problems)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the agent stopped after the file-watch error: %v\n%s", err, ag.logText())
	}
	s, raw := status(t, u)
	if s.Agent.Health != api.HealthDegraded || !strings.Contains(strings.Join(s.Agent.Problems, "\n"), "watch "+filepath.Join(vdir, "vault.enc")) {
		t.Errorf("status does not say the file watch is degraded:\n%s", raw)
	}

	if err := os.Remove(vdir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(vdir+".away", vdir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/health to be ok again", func() bool {
		code, _ := ag.get(t, "/health")
		return code == http.StatusOK
	})
}

// agentPID is the pid in the user's local agent lock.
func agentPID(t *testing.T, u *user) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(u.home, ".dso", "run", "agent.lock"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func grepLines(text string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}
