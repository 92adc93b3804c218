package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/provider/awssm/awssmtest"
	"github.com/dso-project/dso/internal/provider/providertest"
	"github.com/dso-project/dso/internal/signature"
	"github.com/dso-project/dso/internal/testbed"
)

// startVault runs a Vault dev server from DSO_VAULT_BIN (or the tools
// cache) for the test and returns a root client. Under CI a missing
// binary fails the test; elsewhere it skips, saying how to build it.
func startVault(t testing.TB) (*providertest.VaultServer, *vaultapi.Client) {
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
	c, err := vaultapi.NewClient(&vaultapi.Config{Address: s.Addr})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(s.Token)
	return s, c
}

// vaultPut writes data as the new version of KV v2 secret/<rel>.
func vaultPut(t *testing.T, c *vaultapi.Client, rel string, data map[string]any) {
	t.Helper()
	if _, err := c.Logical().Write("secret/data/"+rel, map[string]any{"data": data}); err != nil {
		t.Fatalf("vault write secret/%s: %v", rel, err)
	}
}

// freeLoopback returns a loopback host:port that was free a moment ago.
func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// webhook asks the agent's REST API, as a backend's change notification
// would, to check every watched secret now. The body is empty and signed.
func webhook(t *testing.T, addr string, secret []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/webhook", nil)
	ts, sig := signature.Sign(secret, time.Now(), nil)
	req.Header.Set(signature.TimestampHeader, ts)
	req.Header.Set(signature.Header, sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("webhook: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: HTTP %d, want 202", resp.StatusCode)
	}
}

// TestUpWithVaultAndAWS: `docker dso up` on a project whose service takes
// secrets from a Vault dev server (reference form with a KV v2 field, and
// the seed's mapping form secret/data/PATH/FIELD) and from AWS Secrets
// Manager (the kumo emulator), the last two through the seed's label form
// (dso.secrets naming dso.yaml secrets with their mappings). The app sees both; nothing leaks; a new version
// in Vault reaches the app through a restart rotation.
func TestUpWithVaultAndAWS(t *testing.T) {
	start := time.Now()
	u := newUser(t)
	vs, vc := startVault(t)
	aws := awssmtest.Start(t, false)
	v1, v2, key := canary(t, "vault1"), canary(t, "vault2"), canary(t, "aws")
	vaultPut(t, vc, "app/db", map[string]any{"password": string(v1), "user": "app"})
	aws.Put(t, "app/api_key", key)

	rnd := make([]byte, 16)
	rand.Read(rnd)
	hookSecret := []byte(hex.EncodeToString(rnd))
	restAddr := freeLoopback(t)
	// The agent that `up` starts inherits this environment: the providers'
	// credentials and where its REST API listens.
	u.env = append(u.env,
		"VAULT_TOKEN="+vs.Token,
		"AWS_REGION="+awssmtest.Region, "AWS_ACCESS_KEY_ID=AKIDTEST", "AWS_SECRET_ACCESS_KEY=test-secret-key",
		"AWS_EC2_METADATA_DISABLED=true",
		"DSO_API_ADDR="+restAddr, "DSO_WEBHOOK_SECRET="+string(hookSecret))
	dir := writeProject(t, map[string]string{
		"dso.yaml": `version: v1
mode: local
providers:
  vault:
    type: vault
    address: ` + vs.Addr + `
    auth:
      method: token
      params:
        token: ${VAULT_TOKEN}
  aws:
    type: aws
    address: ` + aws.KumoURL + `
defaults:
  provider: vault
secrets:
  - name: api_credentials
    provider: aws
    mappings:
      API_KEY: app/api_key
  - name: db_user
    mappings:
      DB_USER: secret/data/app/db/user
`,
		"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    labels:
      dso.secrets: "api_credentials, db_user"
      dso.update.strategy: restart
    environment:
      DB_PASSWORD: dso://secret/data/app/db?provider=vault#password
`})
	project := testbed.Project(t, dir)
	up := u.must(dir, nil, "dso", "up", "-p", project, "-d")
	upTook := time.Since(start)
	oldID := serviceContainer(t, project, "api")
	waitFor(t, "the Vault value", func() bool { _, b, ok := answer(t, project, "api", "/env/DB_PASSWORD"); return ok && b == string(v1) })
	if _, b, ok := answer(t, project, "api", "/env/API_KEY"); !ok || b != string(key) {
		t.Fatalf("the app does not see the AWS value (label form): ok %v, %d bytes", ok, len(b))
	}
	if _, b, ok := answer(t, project, "api", "/env/DB_USER"); !ok || b != "app" {
		t.Fatalf("the app does not see the Vault field mapped in the seed's form (secret/data/app/db/user): ok %v, %q", ok, b)
	}

	doctor := u.run(dir, nil, "dso", "doctor", "--level", "full")
	for _, want := range []string{`ok    provider "aws" (aws)`, `ok    provider "vault" (vault)`, `ok    secret "api_credentials" readable`, `ok    secret "db_user" readable`, "ok    agent running"} {
		if !strings.Contains(doctor.stdout, want) {
			t.Errorf("doctor does not say %q:\n%s", want, doctor.output())
		}
	}

	rotated := time.Now()
	vaultPut(t, vc, "app/db", map[string]any{"password": string(v2), "user": "app"})
	webhook(t, restAddr, hookSecret)
	waitFor(t, "the new Vault value through a restart rotation", func() bool {
		id, b, ok := answer(t, project, "api", "/env/DB_PASSWORD")
		return ok && b == string(v2) && id != oldID
	})
	rotateTook := time.Since(rotated)
	if _, b, ok := answer(t, project, "api", "/env/API_KEY"); !ok || b != string(key) {
		t.Errorf("after the rotation the app lost the AWS value")
	}
	var status result
	waitFor(t, "the rotation journaled as a success", func() bool {
		status = u.must(dir, nil, "dso", "status", "--json")
		return strings.Contains(status.stdout, `"strategy": "restart"`) && strings.Contains(status.stdout, `"result": "success"`)
	})
	logs := u.run("", nil, "logs", serviceContainer(t, project, "api"))
	assertNoLeak(t, u, [][]byte{v1, v2, key}, up.output(), doctor.output(), status.output(), logs.output(), agentLog(t, u))
	t.Logf("up -d %s; Vault change to the app serving it %s; whole test %s", upTook.Round(time.Millisecond), rotateTook.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// TestUpStopsOnUnreachableProvider: with the Vault server down, `up` names
// the provider and the reference, exits 6, and creates nothing.
func TestUpStopsOnUnreachableProvider(t *testing.T) {
	u := newUser(t)
	dead := freeLoopback(t)
	dir := writeProject(t, map[string]string{
		"dso.yaml": `providers:
  corp:
    type: vault
    address: http://` + dead + `
    timeout: 2s
    retry: {attempts: 1}
    auth: {method: token, params: {token: unused}}
secrets: []
`,
		"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    environment:
      DB_PASSWORD: dso://secret/data/app/db?provider=corp#password
`})
	project := testbed.Project(t, dir)
	r := u.run(dir, nil, "dso", "up", "-p", project, "-d")
	if r.code != 6 {
		t.Errorf("exit %d, want 6:\n%s", r.code, r.output())
	}
	for _, want := range []string{`provider "corp"`, "secret/data/app/db", "unreachable", `service "api", variable DB_PASSWORD`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the error does not say %q:\n%s", want, r.stderr)
		}
	}
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project)
	if list, err := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f}); err != nil || len(list.Items) != 0 {
		t.Errorf("up created containers although a provider was unreachable (%v)", err)
	}
	doctor := u.run(dir, nil, "dso", "doctor")
	if doctor.code != 6 || !strings.Contains(doctor.stdout, `FAIL  provider "corp" (vault)`) || !strings.Contains(doctor.stdout, "providers.corp.address") {
		t.Errorf("doctor (exit %d) does not name the provider and the fix:\n%s", doctor.code, doctor.output())
	}
}
