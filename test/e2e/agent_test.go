package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/notify"
	"github.com/dso-project/dso/internal/signature"
	"github.com/dso-project/dso/internal/testbed"
)

// agentProc is a `docker dso agent --local` the test started itself, with
// the test's dso.yaml (which `docker dso up` never passes to the agent it
// starts) and the REST API on a free port.
type agentProc struct {
	addr  string // REST API host:port
	log   string // its stdout and stderr
	token string // in its environment as DSO_TEST_API_TOKEN, sent by get
}

// apiTokenYAML sets the agent's API token (under agent:) to the one
// startAgent puts in its environment (`up`, reading the same file without
// it, gets a placeholder).
const apiTokenYAML = "  api:\n    token: ${DSO_TEST_API_TOKEN:-not-the-agent}\n"

// startAgent runs the user's plugin binary as `docker-dso -c cfg agent
// --local` with env added, waits for its REST API, and stops it (SIGTERM,
// by pid) when the test ends.
func startAgent(t *testing.T, u *user, cfg string, env ...string) *agentProc {
	t.Helper()
	a := &agentProc{addr: "127.0.0.1:" + freePort(t), log: filepath.Join(t.TempDir(), "agent.log"), token: hex.EncodeToString(canary(t, "api-token"))}
	env = append(env, "DSO_TEST_API_TOKEN="+a.token)
	logf, err := os.Create(a.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(u.home, ".docker", "cli-plugins", "docker-dso"), "-c", cfg, "agent", "--local")
	cmd.Env = append(append(append([]string{}, u.env...), "DSO_API_ADDR="+a.addr), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			// The agent logs no value (the leak tests check it): its log
			// says what it was doing when the test gave up.
			b, _ := os.ReadFile(a.log)
			t.Logf("the agent's log:\n%s", b)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			t.Errorf("the agent (pid %d) did not stop within 15s of SIGTERM", cmd.Process.Pid)
			cmd.Process.Kill()
			<-exited
		}
	})
	waitFor(t, "the agent's REST API", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(a.log)
			t.Fatalf("the agent stopped at once:\n%s", b)
		default:
		}
		resp, err := http.Get("http://" + a.addr + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return a
}

// get sends the agent's API token, which its dso.yaml may or may not use
// (apiTokenYAML).
func (a *agentProc) get(t *testing.T, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (a *agentProc) webhook(t *testing.T, body []byte, header map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.addr+"/webhook", bytes.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /webhook: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (a *agentProc) logText() string {
	b, _ := os.ReadFile(a.log)
	return string(b)
}

// signedHeaders signs body at t as a webhook sender would.
func signedHeaders(key []byte, t time.Time, body []byte) map[string]string {
	ts, sig := signature.Sign(key, t, body)
	return map[string]string{signature.TimestampHeader: ts, signature.Header: sig}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// status is `docker dso status --json`, decoded.
func status(t *testing.T, u *user) (api.Status, string) {
	t.Helper()
	r := u.must("", nil, "dso", "status", "--json")
	var s api.Status
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("docker dso status --json: %v\n%s", err, r.stdout)
	}
	return s, r.stdout
}

func secretStatus(t *testing.T, s api.Status, name string) api.SecretStatus {
	t.Helper()
	for _, sec := range s.Secrets {
		if sec.Name == name {
			return sec
		}
	}
	t.Fatalf("the agent does not watch %s: %+v", name, s.Secrets)
	return api.SecretStatus{}
}

// filesBackend is a directory served by the example provider plugin: a
// backend whose changes only polling or a webhook can notice (the agent
// watches local vault files, not this).
type filesBackend struct{ dir string }

func newFilesBackend(t *testing.T) *filesBackend {
	return &filesBackend{dir: filepath.Join(t.TempDir(), "secrets")}
}

// set replaces the file of secret path atomically, as a backend would.
func (b *filesBackend) set(t *testing.T, path string, value []byte) {
	t.Helper()
	p := filepath.Join(b.dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, value, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// config is a dso.yaml whose only provider is this backend.
func (b *filesBackend) config(t *testing.T, agentYAML string) string {
	plugin := filepath.Join(t.TempDir(), "dso-provider-example")
	copyFile(t, testbed.GoBinary(t, "./cmd/dso-provider-example"), plugin)
	data, err := os.ReadFile(plugin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return "providers:\n  files:\n    type: plugin\n    plugin: " + plugin + "\n    auth:\n      params:\n        dir: " + b.dir +
		"\n        sha256: " + hex.EncodeToString(sum[:]) + "\n" +
		"agent:\n" + agentYAML + "secrets: {}\n"
}

const apiCompose = `
services:
  api:
    image: %IMAGE%
    ports: ["127.0.0.1::8080"]
    labels:
      dso.update.strategy: restart
    environment:
      TOKEN: dso://app/token
`

func apiProject(t *testing.T, dsoYAML string) (dir, project string) {
	dir = writeProject(t, map[string]string{
		"compose.yaml": strings.ReplaceAll(apiCompose, "%IMAGE%", testbed.TestappImage(t)),
		"dso.yaml":     dsoYAML,
	})
	return dir, testbed.Project(t, dir)
}

// TestAgentWebhook: with polling at 1h and a backend the agent does not
// watch, a change reaches the app only when a signed POST /webhook asks for
// a check; a bad signature is refused and checks nothing.
func TestAgentWebhook(t *testing.T) {
	u := newUser(t)
	key := "webhook-key-" + hex.EncodeToString(canary(t, "k")[:8])
	v1, v2 := canary(t, "w1"), canary(t, "w2")
	b := newFilesBackend(t)
	b.set(t, "app/token", v1)
	dir, project := apiProject(t, b.config(t, "  watch:\n    polling_interval: 1h\n"))
	ag := startAgent(t, u, filepath.Join(dir, "dso.yaml"), "DSO_WEBHOOK_SECRET="+key)
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	oldID := serviceContainer(t, project, "api")
	waitFor(t, "the first value", func() bool { _, v, ok := answer(t, project, "api", "/env/TOKEN"); return ok && v == string(v1) })

	before, _ := status(t, u)
	sec := secretStatus(t, before, "files:app/token")
	if sec.Interval < time.Hour {
		t.Fatalf("the secret is polled every %v: the 1h polling interval is not in effect", sec.Interval)
	}
	body := []byte(`{}`)
	now := time.Now()
	good := signedHeaders([]byte(key), now, body)
	for name, h := range map[string]map[string]string{
		"no signature":         nil,
		"wrong key":            signedHeaders([]byte("not-the-key"), now, body),
		"other body":           signedHeaders([]byte(key), now, []byte(`{"secrets":[]}`)),
		"not hex":              {signature.TimestampHeader: good[signature.TimestampHeader], signature.Header: "sha256=zz"},
		"no sha256= part":      {signature.TimestampHeader: good[signature.TimestampHeader], signature.Header: strings.TrimPrefix(good[signature.Header], "sha256=")},
		"no timestamp":         {signature.Header: good[signature.Header]},
		"signed 6 minutes ago": signedHeaders([]byte(key), now.Add(-6*time.Minute), body),
	} {
		if code := ag.webhook(t, body, h); code != http.StatusUnauthorized {
			t.Errorf("webhook with %s: status %d, want 401", name, code)
		}
	}
	b.set(t, "app/token", v2)
	// The refusals are logged as they are made; by then a refused webhook
	// that checked anything would have.
	waitFor(t, "the five refusals in the agent's log", func() bool { return strings.Count(ag.logText(), "webhook refused") >= 5 })
	after, _ := status(t, u)
	if got := secretStatus(t, after, "files:app/token"); !got.LastCheck.Equal(sec.LastCheck) {
		t.Errorf("refused webhooks checked the secret (last check %v, was %v)", got.LastCheck, sec.LastCheck)
	}
	if id, v, ok := answer(t, project, "api", "/env/TOKEN"); !ok || v != string(v1) || id != oldID {
		t.Fatalf("the app changed without a check (ok %v, same container %v)", ok, id == oldID)
	}

	start := time.Now()
	if code := ag.webhook(t, body, good); code != http.StatusAccepted {
		t.Fatalf("signed webhook: status %d, want 202", code)
	}
	if code := ag.webhook(t, body, good); code != http.StatusUnauthorized {
		t.Errorf("the same signed webhook replayed: status %d, want 401", code)
	}
	waitFor(t, "the new value after the webhook", func() bool {
		id, v, ok := answer(t, project, "api", "/env/TOKEN")
		return ok && v == string(v2) && id != oldID
	})
	t.Logf("signed webhook -> app serving the new value: %v (polling interval 1h)", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(ag.logText(), "webhook refused") {
		t.Errorf("the agent log does not record the refused webhooks")
	}
	for _, c := range []string{string(v1), string(v2), key} {
		if strings.Contains(ag.logText(), c) {
			t.Errorf("LEAK: a secret value or the webhook key is in the agent's log")
		}
	}
}

// TestAgentProviderOutage: while the backend is unreachable the status
// shows the secret failing, nothing rotates and the app keeps serving;
// once it is back with the same value, still nothing rotates.
func TestAgentProviderOutage(t *testing.T) {
	u := newUser(t)
	v := canary(t, "out")
	b := newFilesBackend(t)
	b.set(t, "app/token", v)
	dir, project := apiProject(t, b.config(t, "  watch:\n    polling_interval: 1s\n"+apiTokenYAML))
	ag := startAgent(t, u, filepath.Join(dir, "dso.yaml"))
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	id := serviceContainer(t, project, "api")
	waitFor(t, "the value", func() bool { _, got, ok := answer(t, project, "api", "/env/TOKEN"); return ok && got == string(v) })
	waitFor(t, "a first successful poll", func() bool {
		s, _ := status(t, u)
		return !secretStatus(t, s, "files:app/token").LastCheck.IsZero()
	})

	away := b.dir + ".away"
	if err := os.Rename(b.dir, away); err != nil {
		t.Fatal(err)
	}
	var outage api.Status
	waitFor(t, "the status to show the secret failing", func() bool {
		outage, _ = status(t, u)
		return secretStatus(t, outage, "files:app/token").Failing
	})
	if outage.Agent.Health != api.HealthDegraded || len(outage.Agent.Problems) == 0 {
		t.Errorf("agent health during the outage = %q %v, want degraded with the problem named", outage.Agent.Health, outage.Agent.Problems)
	}
	if code, _ := ag.get(t, "/health"); code != http.StatusServiceUnavailable {
		t.Errorf("GET /health during the outage: %d, want 503", code)
	}
	waitFor(t, "three failed polls in /events", func() bool {
		_, events := ag.get(t, "/events?history=1000&follow=0")
		return strings.Count(events, "event: provider_error") >= 3
	})
	if got, v2, ok := answer(t, project, "api", "/env/TOKEN"); got != id || !ok || v2 != string(v) {
		t.Fatalf("during the outage the app changed (same container %v, serving %v)", got == id, ok)
	}

	if err := os.Rename(away, b.dir); err != nil {
		t.Fatal(err)
	}
	var healed api.Status
	waitFor(t, "the secret to be checked successfully again", func() bool {
		healed, _ = status(t, u)
		return !secretStatus(t, healed, "files:app/token").Failing
	})
	checks := map[time.Time]bool{}
	waitFor(t, "three more successful polls", func() bool {
		s, _ := status(t, u)
		if sec := secretStatus(t, s, "files:app/token"); !sec.Failing {
			checks[sec.LastCheck] = true
		}
		return len(checks) >= 3
	})
	healed, raw := status(t, u)
	if len(healed.Rotations) != 0 {
		t.Errorf("rotations after an outage with no change:\n%s", raw)
	}
	if healed.Agent.Health != api.HealthOK {
		t.Errorf("agent health after the outage = %q %v", healed.Agent.Health, healed.Agent.Problems)
	}
	if got, v2, ok := answer(t, project, "api", "/env/TOKEN"); got != id || !ok || v2 != string(v) {
		t.Errorf("after the outage the app changed (same container %v, serving %v)", got == id, ok)
	}
}

// hookSink is an endpoint for the agent's outbound webhooks that keeps
// what it got and checks signatures.
type hookSink struct {
	key    []byte
	mu     sync.Mutex
	bodies [][]byte
	bad    int
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if signature.Verify(h.key, body, r.Header.Get(signature.TimestampHeader), r.Header.Get(signature.Header), time.Now()) != nil {
		h.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	h.bodies = append(h.bodies, body)
}

func (h *hookSink) received() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.bodies...)
}

// TestAgentCanaryNeverShows: through a full restart rotation from the local
// vault, neither the old nor the new value shows in the agent's log,
// /events, `docker dso status --json`, /metrics or the outbound rotation
// webhook (whose signature checks out), nor anywhere assertNoLeak looks.
func TestAgentCanaryNeverShows(t *testing.T) {
	u := newUser(t)
	v1, v2 := canary(t, "c1"), canary(t, "c2")
	hookKey := canary(t, "hookkey")
	sink := &hookSink{key: hookKey}
	hooks := httptest.NewServer(sink)
	defer hooks.Close()
	dir, project := apiProject(t, "providers:\n  local:\n    type: local\nsecrets: {}\n")
	// The agent's own dso.yaml (as /etc/dso/dso.yaml would be), with the
	// signing key from its environment.
	agentCfg := writeProject(t, map[string]string{"dso.yaml": "providers:\n  local:\n    type: local\nagent:\n" + apiTokenYAML + "  notify:\n    - url: " + hooks.URL + "/dso\n      secret: ${DSO_TEST_HOOK_KEY}\nsecrets: {}\n"})
	u.initVault(map[string][]byte{"app/token": v1})
	ag := startAgent(t, u, filepath.Join(agentCfg, "dso.yaml"), "DSO_TEST_HOOK_KEY="+string(hookKey))
	up := u.must(dir, nil, "dso", "up", "-p", project, "-d")
	oldID := serviceContainer(t, project, "api")
	waitFor(t, "the first value", func() bool { _, v, ok := answer(t, project, "api", "/env/TOKEN"); return ok && v == string(v1) })

	set := u.must("", v2, "dso", "secret", "set", "app/token")
	var newID string
	waitFor(t, "the new value after rotation", func() bool {
		id, v, ok := answer(t, project, "api", "/env/TOKEN")
		newID = id
		return ok && v == string(v2) && id != oldID
	})
	waitFor(t, "the rotation webhook", func() bool { return len(sink.received()) > 0 })
	var n notify.Notification
	if err := json.Unmarshal(sink.received()[0], &n); err != nil {
		t.Fatal(err)
	}
	if n.Event != notify.EventRotationSucceeded || n.Service != "api" || n.Project != project || n.Strategy != "restart" ||
		n.OldContainer != oldID[:12] || n.NewContainer != newID[:12] || len(n.Secrets) != 1 || n.Secrets[0] != "local:app/token" {
		t.Errorf("notification = %+v, want a successful restart of %s/api from %.12s to %.12s for local:app/token", n, project, oldID, newID)
	}
	if sink.bad != 0 {
		t.Errorf("%d notifications with a bad signature", sink.bad)
	}

	_, raw := status(t, u)
	if !strings.Contains(raw, `"result": "success"`) {
		t.Errorf("the status shows no successful rotation:\n%s", raw)
	}
	_, events := ag.get(t, "/events?history=1000&follow=0")
	if !strings.Contains(events, "event: rotation") {
		t.Errorf("/events has no rotation event")
	}
	_, metrics := ag.get(t, "/metrics")
	if !strings.Contains(metrics, "dso_rotations_total") {
		t.Errorf("/metrics has no rotation counter")
	}
	texts := []string{ag.logText(), events, raw, metrics, up.output(), set.output()}
	for _, b := range sink.received() {
		texts = append(texts, string(b))
	}
	// The signing key is in the agent's environment on purpose (dso.yaml
	// takes it from there): the texts alone are searched for it.
	assertNotInTexts(t, hookKey, texts...)
	assertNoLeak(t, u, [][]byte{v1, v2}, texts...)
}

// TestAgentSocketRefusesOutsider: `docker dso status` run as nobody is
// refused by the real agent, by the socket's file permissions and, with
// those opened up, by its check of the caller's kernel credentials.
func TestAgentSocketRefusesOutsider(t *testing.T) {
	testbed.NeedRoot(t, "runs a client as another user")
	u := newUser(t)
	dir := writeProject(t, map[string]string{"dso.yaml": "providers:\n  local:\n    type: local\nsecrets: {}\n"})
	startAgent(t, u, filepath.Join(dir, "dso.yaml"))
	if r := u.must("", nil, "dso", "status"); !strings.HasPrefix(r.stdout, "Agent: ok") {
		t.Fatalf("the agent's own user: %s", r.output())
	}

	bin, err := os.MkdirTemp("", "dso-e2e-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(bin, 0o755)
	t.Cleanup(func() { os.RemoveAll(bin) })
	exe := filepath.Join(bin, "docker-dso")
	copyFile(t, filepath.Join(u.home, ".docker", "cli-plugins", "docker-dso"), exe)
	asNobody := func() (string, int) {
		cmd := exec.Command(exe, "status")
		cmd.Env = []string{"HOME=" + u.home, "PATH=/usr/bin:/bin"}
		cmd.Dir = bin
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	// Every directory on the way to the socket is opened to all, so that
	// only the socket's own mode stands between nobody and the agent.
	sock := filepath.Join(u.home, ".dso", "run", "dso.sock")
	for p := filepath.Dir(sock); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out, code := asNobody()
	t.Logf("nobody, the socket's own permissions: exit %d: %s", code, strings.TrimSpace(out))
	if code == 0 || !strings.Contains(out, "permission denied on "+sock) {
		t.Errorf("nobody, with the path to the socket open: exit %d\n%s\nwant a refusal by the socket's permissions (permission denied on %s)", code, out, sock)
	}

	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	out, code = asNobody()
	t.Logf("nobody, socket open to all: exit %d: %s", code, strings.TrimSpace(out))
	if code == 0 || !strings.Contains(out, "uid 65534 is not allowed") {
		t.Errorf("nobody, with the socket open to all: exit %d\n%s\nwant a refusal naming uid 65534", code, out)
	}
	if strings.Contains(out, "Watched secrets") {
		t.Errorf("the refusal shows status data:\n%s", out)
	}
}

// TestAgentNotifiesFailedRotation: a restart rotation whose new container
// cannot start ends in exactly one signed rotation.failed webhook naming the
// error; an endpoint that asked for failures only gets the failures and not
// the successes that happen around them. Each endpoint is sent to in order,
// so the counts are exact once a later notification has arrived.
func TestAgentNotifiesFailedRotation(t *testing.T) {
	u := newUser(t)
	good := canary(t, "good")
	key := canary(t, "failkey")
	all, failures := &hookSink{key: key}, &hookSink{key: key}
	mux := http.NewServeMux()
	mux.Handle("/all", all)
	mux.Handle("/failures", failures)
	hooks := httptest.NewServer(mux)
	defer hooks.Close()
	image := testbed.BuildImage(t, "picky", map[string]string{}, "FROM "+testbed.BusyboxImage(t)+"\n"+
		`RUN printf '#!/bin/sh\ncase "$TOKEN" in reject*) echo refusing; exit 1;; esac\nmkdir -p /tmp/www && echo ok > /tmp/www/ok\nexec httpd -f -p 8080 -h /tmp/www\n' > /entry.sh && chmod +x /entry.sh`+"\n"+
		`ENTRYPOINT ["/entry.sh"]`+"\n")
	dir := writeProject(t, map[string]string{
		"compose.yaml": "services:\n  picky:\n    image: " + image + "\n    ports: [\"127.0.0.1::8080\"]\n    labels:\n      dso.update.strategy: restart\n    environment:\n      TOKEN: dso://app/token\n",
		"dso.yaml":     "providers:\n  local:\n    type: local\nsecrets: {}\n",
	})
	project := testbed.Project(t, dir)
	agentCfg := writeProject(t, map[string]string{"dso.yaml": "providers:\n  local:\n    type: local\nagent:\n" + apiTokenYAML + "  notify:\n" +
		"    - url: " + hooks.URL + "/all\n      secret: ${DSO_TEST_HOOK_KEY}\n      events: [success, failure]\n" +
		"    - url: " + hooks.URL + "/failures\n      secret: ${DSO_TEST_HOOK_KEY}\n      events: [failure]\nsecrets: {}\n"})
	u.initVault(map[string][]byte{"app/token": good})
	startAgent(t, u, filepath.Join(agentCfg, "dso.yaml"), "DSO_TEST_HOOK_KEY="+string(key))
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	waitFor(t, "the app", func() bool { _, b, ok := answer(t, project, "picky", "/ok"); return ok && strings.TrimSpace(b) == "ok" })

	// A success first: the failures-only endpoint must not hear of it.
	u.must("", append(good, "-2"...), "dso", "secret", "set", "app/token")
	waitFor(t, "the first rotation.succeeded", func() bool { return len(all.received()) == 1 })
	oldID := serviceContainer(t, project, "picky")

	// Two failed rotations, then a success: the last notification on
	// each endpoint comes after every one the failures could have caused.
	for i, bad := range []string{"reject-this", "reject-that"} {
		u.must("", []byte(bad), "dso", "secret", "set", "app/token")
		waitFor(t, "the rotation.failed of "+bad, func() bool { return len(failures.received()) > i })
	}
	u.must("", append(good, "-3"...), "dso", "secret", "set", "app/token")
	waitFor(t, "the last rotation.succeeded", func() bool { return len(all.received()) >= 4 })

	events := func(h *hookSink) []string {
		var out []string
		for _, b := range h.received() {
			var n notify.Notification
			if err := json.Unmarshal(b, &n); err != nil {
				t.Fatalf("a notification is not JSON: %v", err)
			}
			out = append(out, n.Event)
		}
		return out
	}
	want := []string{notify.EventRotationSucceeded, notify.EventRotationFailed, notify.EventRotationFailed, notify.EventRotationSucceeded}
	if got := events(all); !slices.Equal(got, want) {
		t.Errorf("the endpoint for every event got %q, want %q", got, want)
	}
	if got := events(failures); !slices.Equal(got, want[1:3]) {
		t.Errorf("the failures-only endpoint got %q, want exactly the two failures", got)
	}
	var n notify.Notification
	if err := json.Unmarshal(failures.received()[0], &n); err != nil {
		t.Fatal(err)
	}
	if n.Event != notify.EventRotationFailed || n.Service != "picky" || n.OldContainer != oldID[:12] || n.NewContainer != "" || !strings.Contains(n.Error, "after 3 attempts") {
		t.Errorf("notification = %+v, want a failed restart of picky from %.12s with its error", n, oldID)
	}
	if all.bad != 0 || failures.bad != 0 {
		t.Errorf("%d + %d notifications with a bad signature", all.bad, failures.bad)
	}
	for _, b := range append(all.received(), failures.received()...) {
		if bytes.Contains(b, good) || bytes.Contains(b, []byte("reject-th")) || bytes.Contains(b, key) {
			t.Errorf("LEAK: a value or the signing key is in a notification")
		}
	}
}
