package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/rotate"
	"github.com/dso-project/dso/internal/testbed"
)

// crashCase is a service whose rotation the agent is killed in.
type crashCase struct {
	strategy string
	volume   bool // a writable volume: rolling goes stop-first
	steps    []string
}

// TestRotationCrashRecovery kills the agent with SIGKILL at every step of
// restart and rolling rotations (the test-only crash point
// DSO_TEST_CRASH_AT), starts it again as systemd would, and checks that it
// finishes or undoes the rotation with no human action: exactly one
// container per replica under its compose name, running, holding the
// newest value, nothing left over, the recovery in the journal, and no
// failed request at any time (each service is behind its proxy).
func TestRotationCrashRecovery(t *testing.T) {
	cases := []crashCase{
		// restart with a host port: stop-first behind its proxy.
		{strategy: "restart", steps: []string{rotate.StepCreate, rotate.StepStopOld, rotate.StepStart, rotate.StepHealth, rotate.StepSwitch, rotate.StepRemoveOld, rotate.StepRename}},
		// rolling behind its proxy: start-first.
		{strategy: "rolling", steps: []string{rotate.StepCreate, rotate.StepStart, rotate.StepHealth, rotate.StepSwitch, rotate.StepDrain, rotate.StepRemoveOld, rotate.StepRename}},
		// rolling with a volume: stop-first while the proxy holds.
		{strategy: "rolling", volume: true, steps: []string{rotate.StepStopOld, rotate.StepStart}},
	}
	for _, c := range cases {
		for _, step := range c.steps {
			name := c.strategy + "/" + step
			if c.volume {
				name = c.strategy + "-volume/" + step
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				crashAndRecover(t, c, step)
			})
		}
	}
}

func crashAndRecover(t *testing.T, c crashCase, step string) {
	u := newUser(t)
	volume := ""
	if c.volume {
		volume = "    volumes: [\"data:/data\"]\n"
	}
	compose := "services:\n  api:\n    image: " + testbed.TestappImage(t) + "\n    ports: [\"127.0.0.1::8080\"]\n" + volume +
		"    labels:\n      dso.update.strategy: " + c.strategy + "\n    environment:\n      TOKEN: dso://app/token\n"
	if c.volume {
		compose += "volumes:\n  data: {}\n"
	}
	dir := writeProject(t, map[string]string{"compose.yaml": compose,
		"dso.yaml": "providers:\n  local: {type: local}\nagent:\n  rotation:\n    drain_timeout: 1s\n"})
	project := testbed.Project(t, dir)
	cfg := filepath.Join(dir, "dso.yaml")
	u.initVault(map[string][]byte{"app/token": []byte("old")})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	want := []string{project + "-api-1", project + "-api-dso-proxy-1"}
	addr := func() string { return proxyAddr(t, project, "api", 8080) }
	waitFor(t, "the first value", func() bool { return tryGet(addr(), "/env/TOKEN") == "old" })
	l := startLoad(t, addr(), "/healthz", 2, false)

	u.must("", nil, "dso", "agent", "stop")
	startLocalAgent(t, u, cfg, "DSO_TEST_CRASH_AT="+c.strategy+":"+step)
	pid := agentPID(t, u)
	u.must("", []byte("new"), "dso", "secret", "set", "app/token")
	waitFor(t, "the agent to kill itself at "+step, func() bool { return syscall.Kill(pid, 0) != nil })

	restarted := time.Now()
	startLocalAgent(t, u, cfg)
	var journal string
	waitFor(t, "a clean state holding the new value, the recovery journaled", func() bool {
		ok, _ := clean(t, project, want...)
		journal = u.run("", nil, "dso", "status", "--json").stdout
		return ok && tryGet(addr(), "/env/TOKEN") == "new" && strings.Contains(journal, `"recovery": "recovered at step `+step)
	})
	t.Logf("%s: clean state holding the new value %s after the agent's restart", t.Name(), time.Since(restarted).Round(10*time.Millisecond))
	l.finish(t)
}

// servicePort is the host address of a service's published 8080.
func servicePort(t *testing.T, project, service string) string {
	t.Helper()
	return publishedAddr(t, project, "com.docker.compose.service="+service, 8080)
}

// tryGet asks the testapp at addr once, without failing the test: "" when
// there is no address or no answer.
func tryGet(addr, path string) string {
	if addr == "" {
		return ""
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

// TestRotationTimedKill kills the agent with SIGKILL at a random moment of
// a rotation, as a user (or the kernel's OOM killer) would, with no crash
// point: two rolling services under steady load (a new connection per
// request and a long-lived connection) and a restart service (a new
// connection per request) share the secret. After each kill the agent is
// started again by hand, as systemd would: no request fails, long-lived
// connections end only by the drain bound, and each service is back to one
// running container under its compose name, holding the newest value. The
// time from the restart to that state is logged.
func TestRotationTimedKill(t *testing.T) {
	u := newUser(t)
	const drain = 2 * time.Second
	dir, project, dbPort := rollingProject(t, drain.String(), `  api:
    image: `+testbed.TestappImage(t)+`
    ports: ["127.0.0.1::8080"]
    labels: {dso.update.strategy: restart}
    environment: {TOKEN: "dso://app/token"}
`)
	cfg := filepath.Join(dir, "dso.yaml")
	u.initVault(map[string][]byte{"app/token": []byte("v0")})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	want := []string{project + "-web-1", project + "-db-1", project + "-api-1", project + "-web-dso-proxy-1", project + "-db-dso-proxy-1", project + "-api-dso-proxy-1"}
	webAddr, dbAddr, apiAddr := serviceAddr(t, project, "web"), "127.0.0.1:"+dbPort, serviceAddr(t, project, "api")
	values := func(v string) bool {
		return tryGet(webAddr, "/env/TOKEN") == v && tryGet(dbAddr, "/env/TOKEN") == v && tryGet(apiAddr, "/env/TOKEN") == v
	}
	waitFor(t, "the first value", func() bool { return values("v0") })
	loads := []*load{startLoad(t, webAddr, "/env/TOKEN", 3, true), startLoad(t, dbAddr, "/env/TOKEN", 3, true)}
	apiLoad := startLoad(t, apiAddr, "/env/TOKEN", 1, false)
	logsOnFailure(t, u, want[3:]...)

	const kills = 6
	for i := 1; i <= kills; i++ {
		v := fmt.Sprintf("v%d", i)
		u.must("", []byte(v), "dso", "secret", "set", "app/token")
		// A rotation takes about 2-5 s here: kill anywhere in it.
		delay := time.Duration(rand.Int64N(int64(5 * time.Second)))
		time.Sleep(delay)
		killLocalAgent(t, u)
		restarted := time.Now()
		startLocalAgent(t, u, cfg)
		ok := false
		var got string
		for time.Since(restarted) < 30*time.Second {
			if ok, got = clean(t, project, want...); ok && values(v) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !ok || !values(v) {
			t.Fatalf("kill %d (%s after the change): 30 s after the restart the project holds %s, and the value %s is not served everywhere", i, delay, got, v)
		}
		t.Logf("kill %d, %s after the change: clean state holding the new value %s after the agent's restart", i, delay.Round(time.Millisecond), time.Since(restarted).Round(10*time.Millisecond))
	}
	for _, l := range loads {
		l.finish(t)
		l.checkLongLived(t, drain)
	}
	apiLoad.finish(t)
	t.Logf("rotations recovered, by service and step: %v", recoveries(agentLog(t, u)))
}

// recoveries counts the agent's log lines "recovered an unfinished
// rotation" by compose service and step.
func recoveries(log string) map[string]int {
	counts := map[string]int{}
	for _, line := range strings.Split(log, "\n") {
		var l struct{ Msg, Service, Step string }
		if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "recovered an unfinished rotation" {
			continue
		}
		_, service, _ := strings.Cut(l.Service, "/")
		counts[service+"/"+l.Step]++
	}
	return counts
}
