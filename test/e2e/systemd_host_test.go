package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/cli/doctorcmd"
	"github.com/dso-project/dso/internal/proxy"
	"github.com/dso-project/dso/internal/testbed"
)

// hostManager is a real systemd that runs units on this host: the manager
// of root's own units (`systemd --user`), since PID 1 here is not systemd.
// It applies a unit's sandbox as the system's manager does (capabilities,
// system call filter, /proc, mounts: the test reads them off the agent),
// and its units run in the host's PID and network namespaces, where the
// engine runs. It runs in a mount namespace of its own in which /run,
// /var/lib and /etc are the test's (tmpfs, tmpfs, and an overlay of the
// host's /etc), so that the unit's paths (/run/dso, /var/lib/dso,
// /etc/dso, the group dso) are as on an installed host and the host's own
// stay untouched. Root's units take RuntimeDirectory= under
// $XDG_RUNTIME_DIR and StateDirectory= under $XDG_CONFIG_HOME (systemd
// 252), where the manager also finds the units: /run and /var/lib here.
type hostManager struct {
	t   *testing.T
	pid string
	env []string // the user's environment (newUser), for the docker CLI
	bin string   // the user's docker CLI
	log string   // the manager's own log
}

// startHostManager starts the manager with units (name -> text) and files
// copied into its namespace (path there -> path on the host; /etc and
// /var/lib only), and stops it when the test ends.
func startHostManager(t *testing.T, u *user, units map[string]string, files map[string]string) *hostManager {
	t.Helper()
	testbed.NeedRoot(t, "root's systemd manager and mount namespaces need root")
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		testbed.Unavailable(t, "no systemd (scripts/tools/systemd.sh installs it): %v", err)
	}
	dir := t.TempDir()
	writeFiles(t, filepath.Join(dir, "units"), units)
	for _, d := range []string{"etc-up", "etc-work"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var copies strings.Builder
	for to, from := range files {
		fmt.Fprintf(&copies, "mkdir -p %q && cp %q %q\n", filepath.Dir(to), from, to)
	}
	script := `set -e
d=` + dir + `
touch $d/docker.sock && mount --bind /run/docker.sock $d/docker.sock
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/system && touch /run/docker.sock && mount --bind $d/docker.sock /run/docker.sock
mount -t tmpfs -o mode=755 tmpfs /var/lib
mount -t overlay overlay -o lowerdir=/etc,upperdir=$d/etc-up,workdir=$d/etc-work /etc
groupadd --system dso
mkdir -p /var/lib/systemd/user && cp -r $d/units/. /var/lib/systemd/user/
` + copies.String() + `exec env XDG_RUNTIME_DIR=/run XDG_CONFIG_HOME=/var/lib /lib/systemd/systemd --user
`
	cmd := exec.Command("unshare", "--mount", "--propagation", "slave", "/bin/sh", "-c", script)
	log, err := os.Create(filepath.Join(dir, "manager.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting root's systemd manager: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	m := &hostManager{t: t, pid: strconv.Itoa(cmd.Process.Pid), env: u.env, bin: filepath.Join(u.home, "bin", "docker"), log: log.Name()}
	t.Cleanup(func() {
		// The manager stops its units, then exits.
		m.run("", nil, "systemctl", "--user", "exit")
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("root's systemd manager did not exit within 30s of systemctl exit: killed")
			cmd.Process.Kill()
			<-done
		}
	})
	waitFor(t, "root's systemd manager to start", func() bool {
		select {
		case <-done:
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("root's systemd manager exited:\n%s", b)
		default:
		}
		out, _ := m.run("", nil, "systemctl", "--user", "is-system-running")
		return out == "running" || out == "degraded"
	})
	return m
}

// run runs a program in the manager's mount namespace, in dir ("": /), as
// root, with the user's environment, and returns its trimmed output and
// whether it succeeded.
func (m *hostManager) run(dir string, stdin []byte, args ...string) (string, bool) {
	m.t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--mount=/proc/" + m.pid + "/ns/mnt", "--wd=" + cmp.Or(dir, "/"), "--", "env", "XDG_RUNTIME_DIR=/run"}, args...)...)
	cmd.Env = m.env
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err == nil
}

// must runs a program there that must succeed.
func (m *hostManager) must(dir string, stdin []byte, args ...string) string {
	m.t.Helper()
	out, ok := m.run(dir, stdin, args...)
	if !ok {
		m.t.Fatalf("%s: failed\n%s", strings.Join(args, " "), out)
	}
	return out
}

// docker runs the user's docker CLI there.
func (m *hostManager) docker(dir string, stdin []byte, args ...string) string {
	m.t.Helper()
	return m.must(dir, stdin, append([]string{m.bin}, args...)...)
}

// TestSystemAgentBindsHostPorts runs dso-agent.service as `docker dso
// system unit` writes it (with a drop-in that only sends its output to a
// file, as no journald runs here) under root's systemd manager on this
// host: the agent, confined as the unit says, binds a rolling service's
// fixed host port itself and hands it to the proxy (Docker publishes
// nothing), serves and rotates through it, and the port keeps serving,
// with no failed request, while the agent is killed, systemd restarts it
// and it rotates.
func TestSystemAgentBindsHostPorts(t *testing.T) {
	u := newUser(t)
	v1, v2 := canary(t, "sh1"), canary(t, "sh2")
	plugin := filepath.Join(u.home, ".docker", "cli-plugins", "docker-dso")
	unit := u.must("", nil, "dso", "system", "unit", "--binary", "/var/lib/dso-test/docker-dso").stdout
	agentLog := filepath.Join(t.TempDir(), "agent.log")
	conf := filepath.Join(t.TempDir(), "dso.yaml")
	// The REST API on a port of its own: the agent runs in the host's
	// network namespace, beside the tests' other agents.
	writeFiles(t, filepath.Dir(conf), map[string]string{"dso.yaml": systemAgentConfig + "agent:\n  api:\n    address: 127.0.0.1:" + freePort(t) + "\n"})
	m := startHostManager(t, u, map[string]string{
		"dso-agent.service":            unit,
		"dso-agent.service.d/log.conf": "[Service]\nStandardOutput=append:" + agentLog + "\nStandardError=append:" + agentLog + "\n",
	}, map[string]string{"/var/lib/dso-test/docker-dso": plugin, "/etc/dso/dso.yaml": conf})
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(agentLog)
			status, _ := m.run("", nil, "systemctl", "--user", "status", "--no-pager", "dso-agent.service")
			mlog, _ := os.ReadFile(m.log)
			t.Logf("the agent's log:\n%s\nsystemctl --user status:\n%s\nthe manager's log:\n%s", b, status, mlog)
		}
	})
	m.docker("", nil, "dso", "init", "--vault-file", "/etc/dso/vault.enc", "--key-file", "/etc/dso/master.key")
	setSecret := func(v []byte) string {
		return m.docker("", v, "dso", "secret", "set", "--vault-file", "/etc/dso/vault.enc", "--key-file", "/etc/dso/master.key", "app/token")
	}
	set1 := setSecret(v1)
	m.must("", nil, "systemctl", "--user", "start", "dso-agent.service")
	waitFor(t, "the agent to answer on its socket", func() bool { _, ok := m.run("", nil, m.bin, "dso", "status"); return ok })
	pid := m.must("", nil, "systemctl", "--user", "show", "-p", "MainPID", "--value", "dso-agent.service")

	// The sandbox is the unit's: read off the agent's process.
	proc, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatalf("reading the agent's status (pid %s): %v", pid, err)
	}
	// CAP_CHOWN 0, CAP_DAC_OVERRIDE 1, CAP_NET_BIND_SERVICE 10, CAP_SYS_PTRACE 19.
	for _, want := range []string{"CapBnd:\t0000000000080403", "CapEff:\t0000000000080403", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(string(proc), want+"\n") {
			t.Errorf("the agent runs without %q:\n%s", want, proc)
		}
	}
	if mounts, err := os.ReadFile("/proc/" + pid + "/mountinfo"); err != nil || !strings.Contains(string(mounts), "hidepid=invisible,subset=pid") {
		t.Errorf("the agent's /proc is not the unit's (ProtectProc=invisible, ProcSubset=pid): %v\n%s", err, grepLines(string(mounts), " /proc "))
	}

	// A port under 1024 (ip_unprivileged_port_start is 1024 here): the
	// agent binds it with the unit's CAP_NET_BIND_SERVICE.
	port := lowFreePort(t)
	proj := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1:` + port + `:8080"]
    environment:
      TOKEN: dso://app/token
`})
	project := testbed.Project(t, proj)
	since := time.Now()
	up := m.docker(proj, nil, "dso", "up", "-p", project, "-d", "--wait")
	t.Cleanup(func() { m.run(proj, nil, m.bin, "dso", "down", "-p", project) })
	var st api.Status
	if out := m.docker("", nil, "dso", "status", "--json"); json.Unmarshal([]byte(out), &st) != nil || !st.BindsHostPorts {
		t.Errorf("docker dso status does not say the agent binds host ports:\n%s", out)
	}
	published := func() {
		t.Helper()
		if b := inspect(t, serviceContainer(t, project, "api-dso-proxy")).HostConfig.PortBindings; len(b) != 0 {
			t.Errorf("Docker publishes the proxy's ports %v: the agent was to bind them", b)
		}
	}
	published()
	doctor, _ := m.run("", nil, "sh", "-c", m.bin+" dso doctor --level full --json 2>/dev/null")
	if f := doctorFinding(t, doctor, "proxies' host ports"); f.Status != doctorcmd.StatusOK {
		t.Errorf("doctor on the host: %+v", f)
	}
	addr := "127.0.0.1:" + port
	eventually(t, addr, "/env/TOKEN", string(v1))
	// Under the unit's sandbox too the agent supplies the proxy with host
	// sockets, the application seeing its connections come from the host;
	// unless this kernel lets no process without CAP_NET_ADMIN, which the
	// unit does not give, attach the sockets' filter: the agent then says
	// so, and the proxy connects from its own address.
	for _, ep := range inspect(t, serviceContainer(t, project, "api-dso-proxy")).NetworkSettings.Networks {
		if unprivilegedSocketFilters(t) {
			waitFor(t, "the app seeing connections from the host ("+ep.Gateway.String()+")", func() bool { return peer(addr) == ep.Gateway.String() })
			continue
		}
		t.Logf("this kernel lets no process without CAP_NET_ADMIN attach a socket filter")
		waitFor(t, "the agent saying why the proxy has no host sockets", func() bool {
			b, _ := os.ReadFile(agentLog)
			return strings.Contains(string(b), `"msg":"the proxy connects to its backends from its own network","proxy":"`) &&
				strings.Contains(string(b), `"reason":"attaching the socket filter: operation not permitted"`)
		})
		if got := peer(addr); got != ep.IPAddress.String() {
			t.Errorf("the app sees connections from %q, want the proxy's own address %s", got, ep.IPAddress)
		}
	}

	// kill -9: the proxy keeps the port and serves; systemd restarts the
	// agent, which rotates through the same port; a steady load meanwhile
	// sees no failed request.
	l := startLoad(t, addr, "/healthz", 2, false)
	m.must("", nil, "kill", "-9", pid)
	if got := tryGet(addr, "/env/TOKEN"); got != string(v1) {
		t.Errorf("with the agent killed, %s answers %d bytes, want the value", addr, len(got))
	}
	waitFor(t, "systemd to restart the agent", func() bool {
		out, _ := m.run("", nil, "systemctl", "--user", "show", "-p", "MainPID", "-p", "ActiveState", "--value", "dso-agent.service")
		return runsAgain(out, pid)
	})
	set2 := setSecret(v2)
	waitFor(t, "the rotated value at "+addr, func() bool { return tryGet(addr, "/env/TOKEN") == string(v2) })
	l.finish(t)
	// The agent reached the inits' and the proxy's sockets from the host:
	// no docker exec in the project's containers.
	if starts, execs := projectEvents(t, project, since); starts == 0 || execs != 0 {
		t.Errorf("the project's containers saw %d starts and %d execs, want starts and no exec", starts, execs)
	}
	published()
	logs, err := os.ReadFile(agentLog)
	if err != nil || !strings.Contains(string(logs), "the agent binds the proxies' host ports") {
		t.Errorf("the agent's log does not say it binds the host ports (%v):\n%s", err, logs)
	}
	assertNoLeak(t, u, [][]byte{v1, v2}, set1, set2, up, string(logs))
}

// projectEvents counts, from the engine's events since then, the starts of
// project's containers and the execs started in them.
func projectEvents(t *testing.T, project string, since time.Time) (starts, execs int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	f := client.Filters{}.Add("type", "container").Add("event", "start", "exec_start").Add("label", "com.docker.compose.project="+project)
	r := testbed.Docker(t).Events(ctx, client.EventsListOptions{Since: strconv.FormatInt(since.Unix(), 10), Until: strconv.FormatInt(time.Now().Unix()+1, 10), Filters: f})
	for {
		select {
		case e := <-r.Messages:
			if e.Action == "start" {
				starts++
			} else {
				execs++
			}
		case err := <-r.Err:
			if !errors.Is(err, io.EOF) {
				t.Fatalf("reading the engine's events: %v", err)
			}
			return starts, execs
		}
	}
}

// doctorFinding is the finding of `docker dso doctor --json` (its output)
// on check.
func doctorFinding(t *testing.T, out, check string) doctorcmd.Finding {
	t.Helper()
	var rep doctorcmd.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("docker dso doctor --json: %v\n%s", err, out)
	}
	for _, f := range rep.Findings {
		if f.Check == check {
			return f
		}
	}
	t.Fatalf("docker dso doctor has no finding %q:\n%s", check, out)
	return doctorcmd.Finding{}
}

// lowFreePort returns a free port of 127.0.0.1 under 1024.
func lowFreePort(t *testing.T) string {
	t.Helper()
	for p := 1023; p >= 900; p-- {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			l.Close()
			return strconv.Itoa(p)
		}
	}
	t.Fatal("no free port of 127.0.0.1 in 900-1023")
	return ""
}

// unprivilegedSocketFilters tells whether this kernel lets a process
// without CAP_NET_ADMIN attach a socket filter, as Linux's own code does
// (this machine kind's kernel does not): a thread of the test drops the
// capability, tries, and ends with the goroutine that locked it.
func unprivilegedSocketFilters(t *testing.T) bool {
	t.Helper()
	ok := make(chan bool, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with its dropped capability
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var caps [2]unix.CapUserData
		if err := unix.Capget(&hdr, &caps[0]); err != nil {
			t.Errorf("capget: %v", err)
			ok <- false
			return
		}
		caps[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		caps[0].Permitted &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &caps[0]); err != nil {
			t.Errorf("capset: %v", err)
			ok <- false
			return
		}
		files, err := proxy.NewHostSockets([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, nil, 1)
		proxy.CloseFiles(files)
		ok <- err == nil
	}()
	return <-ok
}
