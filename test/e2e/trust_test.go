package e2e

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// projectContainers counts every container of project, running or not.
func projectContainers(t *testing.T, project string) int {
	t.Helper()
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project)
	list, err := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// TestUpRefusesWhatDeliveryWould: `up` applies the checks of delivery
// before anything is created: a NUL byte in an env value and variable names
// no environment can hold stop it with exit code 4, each named, no value
// shown, no container created. (In the seed's mapping form such names are
// refused earlier, by dso.yaml's validation, with exit code 3.)
func TestUpRefusesWhatDeliveryWould(t *testing.T) {
	u := newUser(t)
	image := testbed.TestappImage(t)
	nul := append(canary(t, "nul"), 0, 'x')
	plain := canary(t, "plain")
	u.initVault(map[string][]byte{"app/nul": nul, "app/plain": plain})
	dir := writeProject(t, map[string]string{
		"compose.yaml": `
services:
  api:
    image: ` + image + `
    environment:
      WITH_NUL: dso://app/nul
      NUL_AS_FILE: dsofile://app/nul
      X-Y: dso://app/plain
      A.B: dso://app/plain
      "..": dso://app/plain
`,
	})
	project := testbed.Project(t, dir)
	r := u.run(dir, nil, "dso", "up", "-p", project, "-d")
	if r.code != 4 {
		t.Errorf("exit code %d, want 4\n%s", r.code, r.output())
	}
	for _, want := range []string{`service "api"`, "env WITH_NUL: the value has a NUL byte", `env name "X-Y"`, `env name ".."`, `env name "A.B"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the error does not say %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "NUL_AS_FILE") {
		t.Errorf("a NUL byte in a file secret was refused:\n%s", r.stderr)
	}
	if n := projectContainers(t, project); n != 0 {
		t.Errorf("a refused up created %d containers", n)
	}
	for _, c := range [][]byte{nul[:len(nul)-2], plain} {
		if strings.Contains(r.output(), string(c)) {
			t.Errorf("LEAK: a value is in the output of the refused up")
		}
	}
}

// TestAnonymousFloodDoesNotStarveSignedWebhooks: while anonymous clients
// flood the REST API, a signed webhook sent every 200 ms is never refused;
// the flood is (429), and a replayed webhook is refused (401).
func TestAnonymousFloodDoesNotStarveSignedWebhooks(t *testing.T) {
	u := newUser(t)
	key := []byte(hex.EncodeToString(canary(t, "hook")))
	cfg := writeProject(t, map[string]string{"dso.yaml": "providers:\n  local:\n    type: local\nsecrets: {}\n"})
	ag := startAgent(t, u, filepath.Join(cfg, "dso.yaml"), "DSO_WEBHOOK_SECRET="+string(key))

	var answered, limited atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			hc := &http.Client{Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := hc.Get("http://" + ag.addr + "/health")
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				answered.Add(1)
				if resp.StatusCode == http.StatusTooManyRequests {
					limited.Add(1)
				}
			}
		})
	}
	var refused []int
	var last map[string]string
	var lastBody []byte
	for i := range 25 {
		time.Sleep(200 * time.Millisecond)
		// Each delivery is unique, as a sender's event id makes it.
		lastBody = fmt.Appendf(nil, `{"id":%d}`, i)
		last = signedHeaders(key, time.Now(), lastBody)
		if code := ag.webhook(t, lastBody, last); code != http.StatusAccepted {
			refused = append(refused, code)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("anonymous flood: %d requests answered, %d of them 429", answered.Load(), limited.Load())
	if len(refused) > 0 {
		t.Errorf("%d of 25 signed webhooks were refused beside the flood: %v", len(refused), refused)
	}
	if limited.Load() == 0 {
		t.Errorf("the flood of %d anonymous requests was never limited", answered.Load())
	}
	// A refused webhook counts against its sender's anonymous budget, which
	// the flood (from the same address) spent: ask until it is not 429.
	code := 0
	waitFor(t, "an answer to the replayed webhook", func() bool {
		code = ag.webhook(t, lastBody, last)
		return code != http.StatusTooManyRequests
	})
	if code != http.StatusUnauthorized {
		t.Errorf("a replayed webhook: status %d, want 401", code)
	}
	if !strings.Contains(ag.logText(), "webhook refused") || strings.Contains(ag.logText(), string(key)) {
		t.Errorf("the agent's log does not record the replay, or holds the webhook key")
	}
}

// TestHijackedInitSocketWritesNothing: a workload replaces the init's
// socket in its tmpfs with its own listener, which answers the next
// delivery with a canary text and the base64 of the payload it got. The
// delivery fails, and neither that text nor any value shows in the agent's
// log, /events or `docker dso status --json`.
func TestHijackedInitSocketWritesNothing(t *testing.T) {
	u := newUser(t)
	v1, v2, said := canary(t, "h1"), canary(t, "h2"), canary(t, "said")
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    labels:
      dso.update.strategy: signal
    environment:
      TOKEN_FILE: dsofile://app/token
`})
	project := testbed.Project(t, dir)
	agentCfg := writeProject(t, map[string]string{"dso.yaml": "providers:\n  local:\n    type: local\nagent:\n" + apiTokenYAML + "secrets: {}\n"})
	u.initVault(map[string][]byte{"app/token": v1})
	ag := startAgent(t, u, filepath.Join(agentCfg, "dso.yaml"))
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	waitFor(t, "the first value", func() bool {
		_, v, ok := answer(t, project, "api", "/file?path=/run/dso/secrets/TOKEN_FILE")
		return ok && v == string(v1)
	})
	if _, got, ok := answer(t, project, "api", "/hijack?socket=/run/dso/init.sock&reply="+string(said)); !ok || got != "listening" {
		t.Fatalf("the workload could not replace the init's socket: %q", got)
	}
	u.must("", v2, "dso", "secret", "set", "app/token")
	waitFor(t, "the agent to report the refused delivery", func() bool {
		return strings.Contains(ag.logText(), "the container answered")
	})
	_, events := ag.get(t, "/events?history=1000&follow=0")
	_, st := status(t, u)
	for where, text := range map[string]string{"the agent's log": ag.logText(), "/events": events, "status --json": st} {
		for name, c := range map[string]string{
			"the workload's text": string(said), "the old value": string(v1), "the new value": string(v2),
			"the old value in base64": base64.StdEncoding.EncodeToString(v1), "the new value in base64": base64.StdEncoding.EncodeToString(v2),
		} {
			if strings.Contains(text, c) {
				t.Errorf("%s holds %s", where, name)
			}
		}
	}
}

// TestLabelsChooseNoFile: a service's own labels name files for the agent
// to read as its dso.yaml: a hostile one (a vault provider at the test's
// listener, with a token from the agent's environment), a file in the
// format of /etc/shadow holding a canary, and /etc/shadow itself. The agent
// reads none of them: every app gets its value from the configuration up
// registered, the listener hears nothing, and neither the agent's
// environment nor the files' content shows in its log, /events or status.
func TestLabelsChooseNoFile(t *testing.T) {
	u := newUser(t)
	value, agentSecret, shadowHash := canary(t, "value"), canary(t, "agent-env"), canary(t, "hash")
	var heard atomic.Int64
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		heard.Add(1)
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer listener.Close()
	files := writeProject(t, map[string]string{
		"hostile.yaml": "providers:\n  local:\n    type: vault\n    address: " + listener.URL + "\n    auth:\n      method: token\n      params:\n        token: ${DSO_TEST_AGENT_SECRET}\nsecrets: {}\n",
		"shadow":       "root:$6$" + string(shadowHash) + ":19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
	})
	service := func(name, label string) string {
		return "  " + name + ":\n    image: " + testbed.TestappImage(t) + "\n    ports: [\"127.0.0.1::8080\"]\n    labels:\n      dso.config: " + label + "\n    environment:\n      TOKEN: dso://app/token\n"
	}
	dir := writeProject(t, map[string]string{"compose.yaml": "services:\n" +
		service("hostile", filepath.Join(files, "hostile.yaml")) + service("shadow", filepath.Join(files, "shadow")) + service("system", "/etc/shadow")})
	project := testbed.Project(t, dir)
	agentCfg := writeProject(t, map[string]string{"dso.yaml": "providers:\n  local:\n    type: local\nagent:\n" + apiTokenYAML + "secrets: {}\n"})
	u.initVault(map[string][]byte{"app/token": value})
	ag := startAgent(t, u, filepath.Join(agentCfg, "dso.yaml"), "DSO_TEST_AGENT_SECRET="+string(agentSecret))
	up := u.must(dir, nil, "dso", "up", "-p", project, "-d")
	for _, svc := range []string{"hostile", "shadow", "system"} {
		waitFor(t, "the value in service "+svc, func() bool { _, v, ok := answer(t, project, svc, "/env/TOKEN"); return ok && v == string(value) })
	}
	if n := heard.Load(); n != 0 {
		t.Errorf("the hostile dso.yaml's listener got %d requests", n)
	}
	_, events := ag.get(t, "/events?history=1000&follow=0")
	_, st := status(t, u)
	secrets := map[string]string{"the agent's environment": string(agentSecret), "the shadow-like file": string(shadowHash), "the value": string(value)}
	if b, err := os.ReadFile("/etc/shadow"); err == nil {
		for i, line := range strings.Split(string(b), "\n") {
			if f := strings.Split(line, ":"); len(f) > 1 && len(f[1]) > 8 {
				secrets["line "+strconv.Itoa(i+1)+" of /etc/shadow"] = f[1]
			}
		}
	}
	for where, text := range map[string]string{"the agent's log": ag.logText(), "/events": events, "status --json": st, "up's output": up.output()} {
		for name, c := range secrets {
			if strings.Contains(text, c) {
				t.Errorf("%s holds %s", where, name)
			}
		}
	}
}

// TestForgedTwinGetsNothing: a container made with the engine API that
// copies everything `docker inspect` shows of a managed container (labels,
// mounts, entrypoint, command, image) gets no secret: its own log says it
// is not registered with the dso agent, it ends with the init's code 124,
// and an event records the refusal. The real container, restarted by
// Docker under the same ID, is still served.
func TestForgedTwinGetsNothing(t *testing.T) {
	u := newUser(t)
	value := canary(t, "twin")
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    environment:
      TOKEN: dso://app/token
`})
	project := testbed.Project(t, dir)
	agentCfg := writeProject(t, map[string]string{"dso.yaml": "providers:\n  local:\n    type: local\nagent:\n" + apiTokenYAML + "secrets: {}\n"})
	u.initVault(map[string][]byte{"app/token": value})
	ag := startAgent(t, u, filepath.Join(agentCfg, "dso.yaml"))
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	waitFor(t, "the value", func() bool { _, v, ok := answer(t, project, "api", "/env/TOKEN"); return ok && v == string(value) })

	cli := testbed.Docker(t)
	real := serviceContainer(t, project, "api")
	ins, err := cli.ContainerInspect(t.Context(), real, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	twin := testbed.RunContainer(t, client.ContainerCreateOptions{Config: ins.Container.Config, HostConfig: ins.Container.HostConfig, Name: project + "-twin"})
	if code := testbed.WaitExit(t, twin, 60*time.Second); code != 124 {
		t.Errorf("the twin ended with %d, want 124 (no delivery)", code)
	}
	stdout, stderr := testbed.Logs(t, twin)
	if !strings.Contains(stderr, "not registered with the dso agent") {
		t.Errorf("the twin's log does not say why it got nothing:\n%s", stderr)
	}
	if strings.Contains(stdout+stderr, string(value)) {
		t.Errorf("LEAK: the value is in the twin's log")
	}
	_, events := ag.get(t, "/events?history=1000&follow=0")
	if !strings.Contains(events, `"result":"refused"`) || !strings.Contains(events, twin[:12]) {
		t.Errorf("no event records the refusal of %s:\n%s", twin[:12], events)
	}
	if strings.Contains(events+ag.logText(), string(value)) {
		t.Errorf("LEAK: the value is in the agent's log or events")
	}

	if _, err := cli.ContainerRestart(t.Context(), real, client.ContainerRestartOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the value after docker restart", func() bool {
		id, v, ok := answer(t, project, "api", "/env/TOKEN")
		return ok && id == real && v == string(value)
	})
}

// TestRunRegistersItsOneOffContainer: `docker dso compose run` cannot register its
// container before compose starts it (run does both); it registers it as it
// appears, and the agent, waiting a little for that, serves it.
func TestRunRegistersItsOneOffContainer(t *testing.T) {
	u := newUser(t)
	value := canary(t, "run")
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    environment:
      TOKEN: dso://app/token
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": value})
	u.must(dir, nil, "dso", "compose", "run", "-p", project, "-d", "--service-ports", "api")
	waitFor(t, "the value in the one-off container", func() bool {
		_, v, ok := answer(t, project, "api", "/env/TOKEN")
		return ok && v == string(value)
	})
}
