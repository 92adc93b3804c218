package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/proxy"
	"github.com/dso-project/dso/internal/testbed"
)

// disrupted is a project whose rolling rotation is under way, for a
// disruption to act on.
type disrupted struct {
	u       *user
	project string
	cfg     string
	link    *engineLink
	temp    string // name of the rotation's new container
}

// TestRotationDisrupted: something other than a kill of the agent happens
// in the middle of a rolling rotation under steady load; each case ends
// with one running container under its compose name holding the new
// value, the proxy pointed at the service, nothing else in the project,
// within 30 s of the disruption's end. No request fails, except when the
// proxy is killed (its connections go with it) or the new container dies
// (the connections it took after the switch go with it).
func TestRotationDisrupted(t *testing.T) {
	for _, tc := range []struct {
		name        string
		restart     bool // the service has restart: always
		link        bool // the agent reaches the engine through an engineLink
		mayFail     bool // requests may fail
		disrupt     func(t *testing.T, d *disrupted)
		checkStatus func(t *testing.T, d *disrupted)
	}{
		{name: "agent-stop", disrupt: func(t *testing.T, d *disrupted) {
			// A graceful stop (systemctl stop, an upgrade): the rotation in
			// flight finishes, then the agent is started again.
			d.u.must("", nil, "dso", "agent", "stop")
			startLocalAgent(t, d.u, d.cfg)
		}, checkStatus: func(t *testing.T, d *disrupted) {
			if r := d.u.must("", nil, "dso", "status", "--json"); strings.Contains(r.stdout, `"result": "failure"`) || strings.Contains(agentLog(t, d.u), "context canceled") {
				t.Errorf("a graceful stop failed the rotation:\n%s", r.stdout)
			}
		}},
		{name: "engine-drop", link: true, disrupt: func(t *testing.T, d *disrupted) {
			d.link.down()
			time.Sleep(3 * time.Second)
			d.link.up()
		}},
		{name: "engine-drop-after-switch", link: true, disrupt: func(t *testing.T, d *disrupted) {
			// The engine goes away while the old container drains (the
			// drain bound is 1 s and the load keeps connections open): the
			// swap is undone behind the proxy, and nothing in flight on the
			// new container may be cut.
			proxyName := d.project + "-web-dso-proxy-1"
			waitFor(t, "the proxy's switch to the new container", func() bool {
				b := proxyBackends(t, proxyName)
				return len(b) > 0 && !slices.Equal(b, []string{"web"})
			})
			d.link.down()
			time.Sleep(3 * time.Second)
			d.link.up()
		}},
		{name: "new-container-restarted", restart: true, mayFail: true, disrupt: func(t *testing.T, d *disrupted) {
			killContainer(t, d.temp)
		}},
		{name: "new-container-dies", mayFail: true, disrupt: func(t *testing.T, d *disrupted) {
			killContainer(t, d.temp)
		}},
		{name: "second-agent", disrupt: func(t *testing.T, d *disrupted) {
			cmd := exec.Command(filepath.Join(d.u.home, ".docker", "cli-plugins", "docker-dso"), "agent", "--local", "--config", d.cfg)
			cmd.Env = d.u.env
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "an agent is already running") {
				t.Errorf("a second agent: %v, %s; want it refused by the lock", err, out)
			}
		}},
		{name: "proxy-killed", mayFail: true, disrupt: func(t *testing.T, d *disrupted) {
			killContainer(t, d.project+"-web-dso-proxy-1")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := newUser(t)
			d := &disrupted{u: u}
			if tc.link {
				d.link = newEngineLink(t)
				u.env = append(u.env, "DOCKER_HOST=unix://"+d.link.path)
			}
			restart := ""
			if tc.restart {
				restart = "    restart: always\n"
			}
			// A fixed host port: a restarted proxy keeps it.
			addr := "127.0.0.1:" + freePort(t)
			dir := writeProject(t, map[string]string{
				"compose.yaml": "services:\n  web:\n    image: " + testbed.TestappImage(t) + "\n    ports: [\"" + addr + ":8080\"]\n" + restart +
					"    environment:\n      TOKEN: dso://app/token\n",
				"dso.yaml": "providers:\n  local: {type: local}\nagent:\n  rotation:\n    drain_timeout: 1s\n"})
			d.project, d.cfg = testbed.Project(t, dir), filepath.Join(dir, "dso.yaml")
			u.initVault(map[string][]byte{"app/token": []byte("old")})
			u.must(dir, nil, "dso", "up", "-p", d.project, "-d")
			want := []string{d.project + "-web-1", d.project + "-web-dso-proxy-1"}
			logsOnFailure(t, u, want[1])
			waitFor(t, "the first value", func() bool { return tryGet(addr, "/env/TOKEN") == "old" })
			l := startLoad(t, addr, "/healthz", 2, true)

			u.must("", []byte("new"), "dso", "secret", "set", "app/token")
			waitFor(t, "the rotation's new container to run", func() bool {
				d.temp = runningTemp(t, d.project)
				return d.temp != ""
			})
			tc.disrupt(t, d)
			end := time.Now()
			var got string
			ok := false
			for time.Since(end) < 30*time.Second && !ok {
				var done bool
				done, got = clean(t, d.project, want...)
				ok = done && tryGet(addr, "/env/TOKEN") == "new" && slices.Equal(proxyBackends(t, want[1]), []string{"web"})
				if !ok {
					time.Sleep(100 * time.Millisecond)
				}
			}
			if !ok {
				t.Fatalf("30 s after the disruption: the project holds %s, the proxy's backends are %v, the service answers %q", got, proxyBackends(t, want[1]), tryGet(addr, "/env/TOKEN"))
			}
			t.Logf("%s: clean state holding the new value %s after the disruption", tc.name, time.Since(end).Round(10*time.Millisecond))
			if tc.checkStatus != nil {
				tc.checkStatus(t, d)
			}
			if tc.mayFail {
				ok, failed := l.stop()
				t.Logf("load on %s: %d requests answered, %d failed: %s", addr, ok, len(failed), strings.Join(failed[:min(3, len(failed))], "; "))
				return
			}
			l.finish(t)
		})
	}
}

var tempName = regexp.MustCompile(`-dso-r[0-9]+$`)

// runningTemp returns the name of a running container of project under a
// temporary name ("" when there is none).
func runningTemp(t *testing.T, project string) string {
	for name, state := range containerStates(t, project) {
		if tempName.MatchString(name) && state == "running" {
			return name
		}
	}
	return ""
}

// killContainer kills the main process of a container with SIGKILL from
// the host, as the kernel's OOM killer or a crash would: not through the
// engine, so that its restart policy applies.
func killContainer(t *testing.T, name string) {
	t.Helper()
	pid := inspect(t, name).State.Pid
	if pid <= 0 {
		t.Fatalf("container %s has no process", name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill container %s: %v", name, err)
	}
}

// proxyBackends asks the proxy container name for its backends (nil when
// it does not answer).
func proxyBackends(t *testing.T, name string) []string {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "exec", "-i", name, initproc.InitPath, "proxy-ctl")
	cmd.Stdin = strings.NewReader(`{"op":"stats"}`)
	out, err := cmd.Output()
	var r proxy.Reply
	if err != nil || json.Unmarshal(out, &r) != nil || r.Stats == nil {
		return nil
	}
	return r.Stats.Backends
}
