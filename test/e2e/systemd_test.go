package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/cli/doctorcmd"
	"github.com/dso-project/dso/internal/testbed"
)

// systemdMasked are the services of the Debian image that the systemd test
// does not need: masked on systemd's command line, so they do not start.
var systemdMasked = []string{"postgresql.service", "nginx.service", "redis-server.service", "haproxy.service"}

// systemAgentConfig is the system agent's dso.yaml in the systemd tests: a
// local vault in /etc/dso.
const systemAgentConfig = `version: v1
mode: agent
providers:
  local:
    type: local
    vault_file: /etc/dso/vault.enc
    master_key_file: /etc/dso/master.key
secrets: []
`

// runsAgain reads `systemctl show -p MainPID -p ActiveState --value` of
// the agent's unit: it is active again, in another process than pid.
func runsAgain(show, pid string) bool {
	f := strings.Fields(show)
	return len(f) == 2 && f[0] != "0" && f[0] != pid && f[1] == "active"
}

// runSystemd starts a container running systemd as PID 1 from the Debian
// image (the engine refuses --privileged: SYS_ADMIN, no seccomp or AppArmor
// profile, the host's cgroups read-only), with the host's Docker socket and
// dir mounted at the same path, and waits until systemd has booted.
func runSystemd(t *testing.T, dir string) string {
	t.Helper()
	cmd := []string{"/lib/systemd/systemd"}
	for _, s := range systemdMasked {
		cmd = append(cmd, "systemd.mask="+s)
	}
	id := testbed.RunContainer(t, client.ContainerCreateOptions{
		Config: &container.Config{Image: testbed.DebianImage(t), Cmd: cmd, Env: []string{"container=docker"}},
		HostConfig: &container.HostConfig{
			CapAdd:      []string{"SYS_ADMIN"},
			SecurityOpt: []string{"seccomp=unconfined", "apparmor=unconfined"},
			Binds:       []string{"/sys/fs/cgroup:/sys/fs/cgroup:ro", "/var/run/docker.sock:/var/run/docker.sock", dir + ":" + dir},
			Tmpfs:       map[string]string{"/run": "", "/run/lock": ""},
		},
	})
	waitFor(t, "systemd to boot", func() bool {
		out, _ := testbed.Exec(t, id, testbed.ExecOptions{}, "systemctl", "is-system-running")
		state := strings.TrimSpace(out)
		return state == "running" || state == "degraded"
	})
	return id
}

// debPackage builds the .deb of this checkout for this machine's
// architecture, as scripts/package.sh does (scripts/nfpm.yaml, with the files
// staged the same way), and returns its path.
func debPackage(t *testing.T) string {
	t.Helper()
	root := testbed.RepoRoot()
	nfpm := os.Getenv("DSO_NFPM_BIN")
	if nfpm == "" {
		out, err := exec.Command("bash", filepath.Join(root, "scripts/tools/nfpm.sh")).Output()
		if err != nil {
			t.Fatalf("scripts/tools/nfpm.sh: %v", err)
		}
		nfpm = strings.TrimSpace(string(out))
	}
	stage, out := t.TempDir(), t.TempDir()
	plugin := testbed.GoBinary(t, "./cmd/docker-dso")
	copyFile(t, plugin, filepath.Join(stage, "docker-dso"))
	copyFile(t, testbed.GoBinary(t, "./cmd/dso-init"), filepath.Join(stage, "dso-init"))
	for file, args := range map[string][]string{
		"dso-agent.service":    {"system", "unit", "--binary", "/usr/libexec/docker/cli-plugins/docker-dso"},
		"completions/dso.bash": {"completion", "bash"},
		"completions/_dso":     {"completion", "zsh"},
		"completions/dso.fish": {"completion", "fish"},
	} {
		b, err := exec.Command(plugin, args...).Output()
		if err != nil {
			t.Fatalf("docker-dso %s: %v", strings.Join(args, " "), err)
		}
		writeFiles(t, stage, map[string]string{file: string(b)})
	}
	for _, f := range []string{"LICENSE", "README.md"} {
		copyFile(t, filepath.Join(root, f), filepath.Join(stage, f))
	}
	cmd := exec.Command(nfpm, "package", "--config", "scripts/nfpm.yaml", "--packager", "deb", "--target", out+"/")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DSO_VERSION=0.0.0+test", "DSO_ARCH="+runtime.GOARCH, "DSO_STAGE="+stage)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nfpm: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("nfpm made %d .deb files, want 1", len(debs))
	}
	return debs[0]
}

// TestSystemdAgent installs the .deb in a Debian container running a real
// systemd as PID 1, which reaches the host's engine, and runs the agent as
// dso-agent.service: bootstrap,
// system enable/status/logs, containers on the host served, and after a
// kill -9 systemd restarts the agent, which serves and rotates again.
func TestSystemdAgent(t *testing.T) {
	u := newUser(t)
	v1, v2 := canary(t, "sd1"), canary(t, "sd2")
	realDocker, err := exec.LookPath("docker")
	if err != nil {
		t.Fatal(err)
	}
	// The package, the tools it does not carry (the docker CLI and Compose)
	// and the project live at the same path on the host and in the systemd
	// container: the host's engine mounts dso-init from there.
	shared := t.TempDir()
	for name, src := range map[string]string{
		"dso.deb":        debPackage(t),
		"docker":         realDocker,
		"dso-init":       testbed.GoBinary(t, "./cmd/dso-init"),
		"docker-compose": testbed.ComposeBinary(t),
	} {
		copyFile(t, src, filepath.Join(shared, name))
	}
	proj := filepath.Join(shared, "proj")
	writeFiles(t, proj, map[string]string{"compose.yaml": tokenCompose(t)})
	project := testbed.Project(t, proj)
	sd := runSystemd(t, shared)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command(realDocker, "exec", sd, "journalctl", "-u", "dso-agent.service", "--no-pager", "-n", "60").CombinedOutput()
			t.Logf("the agent's journal:\n%s", out)
			out, _ = exec.Command(realDocker, "ps", "-a", "--filter", "label=com.docker.compose.project="+project).CombinedOutput()
			t.Logf("the project's containers:\n%s", out)
		}
	})
	sh := func(script string) string {
		t.Helper()
		out, code := testbed.Exec(t, sd, testbed.ExecOptions{}, "/bin/sh", "-c", script)
		if code != 0 {
			t.Fatalf("in the systemd container: %s: exit %d\n%s", script, code, out)
		}
		return strings.TrimSpace(out)
	}

	// Install as a user would: the .deb with dpkg, beside the docker CLI and
	// Compose (which a Debian user gets from docker.io or Docker's packages).
	sh(`set -e
install -m 755 ` + shared + `/docker /usr/local/bin/docker
mkdir -p /usr/local/lib/docker/cli-plugins
install -m 755 ` + shared + `/docker-compose /usr/local/lib/docker/cli-plugins/
dpkg -i ` + shared + `/dso.deb`)
	if got := sh("dpkg-query -W -f '${Status}' dso && readlink -f /usr/bin/dso && docker dso version"); !strings.Contains(got, "install ok installed") || !strings.Contains(got, "/usr/libexec/docker/cli-plugins/docker-dso") {
		t.Errorf("the package did not install the plugin:\n%s", got)
	}
	bootstrap := sh("docker dso bootstrap agent --non-interactive --provider vault")
	if !strings.Contains(bootstrap, "dso-agent.service enabled") {
		t.Errorf("bootstrap did not enable the unit:\n%s", bootstrap)
	}
	// The agent's own configuration: a local vault beside it.
	sh(`set -e
cat >/etc/dso/dso.yaml <<'EOF'
` + systemAgentConfig + `EOF
docker dso config validate -c /etc/dso/dso.yaml
docker dso init --vault-file /etc/dso/vault.enc --key-file /etc/dso/master.key`)
	setSecret := func(value []byte) result {
		return u.must("", value, "exec", "-i", sd, "docker", "dso", "secret", "set", "--vault-file", "/etc/dso/vault.enc", "--key-file", "/etc/dso/master.key", "app/token")
	}
	set1 := setSecret(v1)
	enable := sh("docker dso system enable")

	status := sh("docker dso system status")
	if !strings.Contains(status, "active (running)") {
		t.Errorf("system status does not show the agent running:\n%s", status)
	}
	sh("docker dso system logs -p err") // answers (an empty log is "-- No entries --")
	if got := sh("stat -c '%a %U:%G' /run/dso/dso.sock"); got != "660 root:dso" {
		t.Errorf("the agent's socket is %q, want 660 root:dso", got)
	}

	// A project started from the systemd host, on the host's engine: the
	// system agent (mode agent) serves it.
	up := sh("cd " + proj + " && DSO_INIT=" + shared + "/dso-init docker dso up -p " + project + " -d --wait")
	app := serviceContainer(t, project, "api")
	eventually(t, serviceAddr(t, project, "api"), "/env/TOKEN", string(v1))
	// In the container's own namespaces the agent cannot bind the host's
	// ports: it says so, and Docker publishes them.
	var st api.Status
	if out := sh("docker dso status --json"); json.Unmarshal([]byte(out), &st) != nil || st.BindsHostPorts {
		t.Errorf("the agent in a container says it binds the host's ports:\n%s", out)
	}
	doctor, _ := testbed.Exec(t, sd, testbed.ExecOptions{}, "sh", "-c", "docker dso doctor --level full --json 2>/dev/null")
	if f := doctorFinding(t, doctor, "proxies' host ports"); f.Status != doctorcmd.StatusWarn || !strings.Contains(f.Detail, "Docker publishes them") || !strings.Contains(f.Fix, "outside any container") {
		t.Errorf("doctor in the container: %+v", f)
	}

	// restarted waits until systemd runs the agent again, in another
	// process than pid, and it answers.
	restarted := func(what, pid string) {
		t.Helper()
		waitFor(t, what, func() bool {
			out, _ := testbed.Exec(t, sd, testbed.ExecOptions{}, "systemctl", "show", "-p", "MainPID", "-p", "ActiveState", "--value", "dso-agent.service")
			return runsAgain(out, pid)
		})
		waitFor(t, "the agent to answer after "+what, func() bool {
			_, code := testbed.Exec(t, sd, testbed.ExecOptions{}, "docker", "dso", "status")
			return code == 0
		})
	}

	// kill -9: systemd restarts the agent (Restart=on-failure).
	pid := sh("systemctl show -p MainPID --value dso-agent.service")
	sh("kill -9 " + pid)
	restarted("systemd to restart the agent", pid)
	if n := sh("systemctl show -p NRestarts --value dso-agent.service"); n == "0" {
		t.Errorf("NRestarts = %s after kill -9", n)
	}
	// The new agent serves a container that starts again, and rotates.
	u.must("", nil, "restart", app)
	waitFor(t, "the restarted container to serve its secret", func() bool { _, b, ok := answer(t, project, "api", "/env/TOKEN"); return ok && b == string(v1) })
	set2 := setSecret(v2)
	waitFor(t, "the rotated value", func() bool { _, b, ok := answer(t, project, "api", "/env/TOKEN"); return ok && b == string(v2) })

	// An upgrade (here the same package again): the package's script
	// reloads systemd and restarts the running agent on the new binary,
	// which serves on.
	pid = sh("systemctl show -p MainPID --value dso-agent.service")
	sh("dpkg -i " + shared + "/dso.deb")
	restarted("the package's script to restart the agent", pid)

	logs := sh("docker dso system logs")
	for _, want := range []string{"dso agent starting", "delivered secrets", "Docker publishes the proxies' host ports"} {
		if !strings.Contains(logs, want) {
			t.Errorf("system logs lack %q:\n%s", want, logs)
		}
	}
	errLogs := sh("docker dso system logs -p err")
	security, _ := testbed.Exec(t, sd, testbed.ExecOptions{}, "systemd-analyze", "security", "--no-pager", "dso-agent.service")
	if m := regexp.MustCompile(`Overall exposure level for dso-agent.service: ([0-9.]+ \S+)`).FindStringSubmatch(security); m != nil {
		var open []string
		for line := range strings.Lines(security) {
			if strings.HasPrefix(line, "✗") {
				open = append(open, strings.Join(strings.Fields(line)[1:2], ""))
			}
		}
		t.Logf("systemd-analyze security dso-agent.service: %s (still open: %s)", m[1], strings.Join(open, " "))
	} else {
		t.Errorf("systemd-analyze security gave no exposure level:\n%s", security)
	}
	assertNoLeak(t, u, [][]byte{v1, v2}, bootstrap, set1.output(), set2.output(), enable, status, up, logs, errLogs)
}
