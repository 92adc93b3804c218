package e2e

import (
	"io"
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
// newest value, nothing left over, the recovery in the journal, and under
// rolling no failed request at any time.
func TestRotationCrashRecovery(t *testing.T) {
	cases := []crashCase{
		// restart with a host port: stop-first, no proxy.
		{strategy: "restart", steps: []string{rotate.StepCreate, rotate.StepStopOld, rotate.StepStart, rotate.StepHealth, rotate.StepRemoveOld, rotate.StepRename}},
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
	want := []string{project + "-api-1"}
	if c.strategy == "rolling" {
		want = append(want, project+"-api-dso-proxy-1")
	}
	addr := func() string {
		if c.strategy == "rolling" {
			return proxyAddr(t, project, "api", 8080)
		}
		return servicePort(t, project, "api")
	}
	waitFor(t, "the first value", func() bool { return tryGet(addr(), "/env/TOKEN") == "old" })
	var l *load
	if c.strategy == "rolling" {
		l = startLoad(t, addr(), "/healthz", 2, false)
	}

	u.must("", nil, "dso", "agent", "stop")
	startLocalAgent(t, u, cfg, "DSO_TEST_CRASH_AT="+c.strategy+":"+step)
	pid := agentPID(t, u)
	u.must("", []byte("new"), "dso", "secret", "set", "app/token")
	waitFor(t, "the agent to kill itself at "+step, func() bool { return syscall.Kill(pid, 0) != nil })

	startLocalAgent(t, u, cfg)
	var journal string
	waitFor(t, "a clean state holding the new value, the recovery journaled", func() bool {
		ok, _ := clean(t, project, want...)
		journal = u.run("", nil, "dso", "status", "--json").stdout
		return ok && tryGet(addr(), "/env/TOKEN") == "new" && strings.Contains(journal, `"recovery": "recovered at step `+step)
	})
	if l != nil {
		l.finish(t)
	}
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
