package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/dso-project/dso/internal/swarm/driver"
	"github.com/dso-project/dso/internal/testbed"
)

// nodeHome is HOME for DSO's commands in a Swarm node: the local vault and
// its key live on the node's tmpfs.
const nodeHome = "/run/home"

// nodeAgentLog is where startNodeAgent sends the agent's log.
const nodeAgentLog = "/run/dso-agent.log"

// startNodeAgent starts the system agent in the node as dso-agent.service
// runs it (`docker-dso agent`, here without a dso.yaml: it serves from the
// local vault under nodeHome), in the background with its log in
// nodeAgentLog, and waits for its Swarm secret driver socket. It returns the
// agent's PID in the node.
func startNodeAgent(t *testing.T, n *testbed.SwarmNode) string {
	t.Helper()
	out, stderr, err := n.Exec(t, "sh", "-c", fmt.Sprintf("HOME=%s %s/docker-dso agent >>%s 2>&1 & echo $!", nodeHome, testbed.PluginDir, nodeAgentLog))
	if err != nil {
		t.Fatalf("starting the agent in %s: %v\n%s", n.Hostname, err, stderr)
	}
	pid := strings.TrimSpace(out)
	waitFor(t, "the agent's Swarm secret driver socket in "+n.Hostname, func() bool {
		_, _, err := n.Exec(t, "test", "-S", driver.DefaultSocket)
		return err == nil
	})
	return pid
}

// stopNodeAgent stops the agent (SIGTERM) and waits until it has exited and
// its driver socket is gone.
func stopNodeAgent(t *testing.T, n *testbed.SwarmNode, pid string) {
	t.Helper()
	if _, stderr, err := n.Exec(t, "kill", pid); err != nil {
		t.Fatalf("kill %s in %s: %v\n%s", pid, n.Hostname, err, stderr)
	}
	waitFor(t, "the agent to exit in "+n.Hostname, func() bool {
		_, _, err := n.Exec(t, "sh", "-c", "test -d /proc/"+pid+" && ! grep -q '^State:.*Z' /proc/"+pid+"/status")
		return err != nil
	})
	if _, _, err := n.Exec(t, "test", "-e", driver.DefaultSocket); err == nil {
		t.Errorf("the driver socket %s is still there after the agent stopped", driver.DefaultSocket)
	}
}

// runningTasks returns, by Swarm node ID, the container ID of the running
// task of the service on that node.
func runningTasks(t *testing.T, s *testbed.Swarm, service string) map[string]string {
	t.Helper()
	tasks, err := s.Manager().Client.TaskList(t.Context(), client.TaskListOptions{
		Filters: make(client.Filters).Add("service", service).Add("desired-state", "running"),
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, task := range tasks.Items {
		if task.Status.State == swarm.TaskStateRunning && task.Status.ContainerStatus != nil {
			out[task.NodeID] = task.Status.ContainerStatus.ContainerID
		}
	}
	return out
}

// createDriverSecret creates a secret of the dso driver as `docker dso
// stack deploy` does: labels only, no value.
func createDriverSecret(t *testing.T, s *testbed.Swarm, name, ref string) {
	t.Helper()
	_, err := s.Manager().Client.SecretCreate(t.Context(), client.SecretCreateOptions{Spec: swarm.SecretSpec{
		Annotations: swarm.Annotations{Name: name, Labels: map[string]string{
			driver.LabelRef: ref, driver.LabelVersion: "1", driver.LabelStack: "app",
		}},
		Driver: &swarm.Driver{Name: driver.Name},
	}})
	if err != nil {
		t.Fatalf("creating secret %s: %v", name, err)
	}
}

// TestSwarmSecretDriver: the agent on the manager of a 3-node Swarm serves
// the dso secret driver from its local vault. A 3-replica service spread
// over the nodes gets the value at /run/secrets/TARGET on every node, and it
// is nowhere else on any node nor in what the engine shows. With the agent
// stopped, a task that needs the value on a node lacking it does not start;
// it starts once the agent is back.
func TestSwarmSecretDriver(t *testing.T) {
	testbed.NeedRoot(t, "the leak scan reads the nodes' files")
	value := canary(t, "swarm")
	late := canary(t, "swarm-late")
	s := testbed.NewSwarm(t, 2)
	image := testbed.TestappImage(t)
	s.LoadImage(t, image)
	m := s.Manager()

	if _, stderr, err := m.Exec(t, "env", "HOME="+nodeHome, "docker", "dso", "init"); err != nil {
		t.Fatalf("docker dso init in the manager: %v\n%s", err, stderr)
	}
	for name, v := range map[string][]byte{"app/canary": value, "app/late": late} {
		if _, stderr, err := m.ExecInput(t, bytes.NewReader(v), "env", "HOME="+nodeHome, "docker", "dso", "secret", "set", name); err != nil {
			t.Fatalf("docker dso secret set %s in the manager: %v\n%s", name, err, stderr)
		}
	}
	pid := startNodeAgent(t, m)

	createDriverSecret(t, s, "app_canary_v1", "dso://app/canary")
	s.Docker(t, "service", "create", "--detach", "--no-resolve-image", "--name", "app_web",
		"--label", "com.docker.stack.namespace=app", "--replicas", "3", "--replicas-max-per-node", "1",
		"--endpoint-mode", "dnsrr", "--publish", "mode=host,target=8080,published=8080",
		"--secret", "source=app_canary_v1,target=canary", image)
	waitFor(t, "a running app_web task on each of the 3 nodes", func() bool { return len(runningTasks(t, s, "app_web")) == 3 })
	for _, n := range s.Nodes() {
		status, body := testbed.HTTPGet(t, fmt.Sprintf("http://%s:8080/file?path=/run/secrets/canary", n.IP))
		if status != http.StatusOK || body != string(value) {
			t.Errorf("/run/secrets/canary of the task on %s: status %d, %d bytes; want the value", n.Hostname, status, len(body))
		}
	}

	scanSwarm(t, s, [][]byte{value, late}, 1)

	// The driver down: a task that needs a secret on a node lacking it
	// fails and is retried by Swarm until the driver is back.
	stopNodeAgent(t, m, pid)
	createDriverSecret(t, s, "app_late_v1", "dso://app/late")
	s.Docker(t, "service", "create", "--detach", "--no-resolve-image", "--name", "app_late",
		"--label", "com.docker.stack.namespace=app", "--endpoint-mode", "dnsrr",
		"--publish", "mode=host,target=8080,published=8081", "--secret", "source=app_late_v1,target=late", image)
	var failure string
	waitFor(t, "an app_late task that failed for want of its secret", func() bool {
		tasks, err := m.Client.TaskList(t.Context(), client.TaskListOptions{Filters: make(client.Filters).Add("service", "app_late")})
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks.Items {
			if task.Status.State == swarm.TaskStateRunning {
				t.Fatalf("an app_late task runs while the driver is down (on node %s)", task.NodeID)
			}
			if task.Status.Err != "" {
				failure = task.Status.Err
				return true
			}
		}
		return false
	})
	t.Logf("with the driver down, the task failed: %s", failure)
	if !strings.Contains(failure, "secret") {
		t.Errorf("task error %q does not say the secret is missing", failure)
	}
	if len(runningTasks(t, s, "app_web")) != 3 {
		t.Error("app_web's tasks did not all keep running while the driver was down")
	}

	start := time.Now()
	startNodeAgent(t, m)
	var onNode string
	waitFor(t, "the app_late task running once the agent is back", func() bool {
		for node := range runningTasks(t, s, "app_late") {
			onNode = node
			return true
		}
		return false
	})
	t.Logf("app_late running %v after the agent was started again", time.Since(start).Round(100*time.Millisecond))
	for _, n := range s.Nodes() {
		if n.NodeID == onNode {
			status, body := testbed.HTTPGet(t, fmt.Sprintf("http://%s:8081/file?path=/run/secrets/late", n.IP))
			if status != http.StatusOK || body != string(late) {
				t.Errorf("/run/secrets/late on %s: status %d, %d bytes; want the value", n.Hostname, status, len(body))
			}
		}
	}
	scanSwarm(t, s, [][]byte{value, late}, 1)
	agentLog, _, err := m.Exec(t, "cat", nodeAgentLog)
	if err != nil || !strings.Contains(agentLog, "app_canary_v1") || !strings.Contains(agentLog, "app_late_v1") {
		t.Errorf("the agent's log does not name the secrets it served (%v):\n%s", err, agentLog)
	}
}

// scanSwarm searches every node for the canaries: the node's engine root
// (images, containers, the Swarm's raft store under swarm/) except the
// tmpfs each task's secrets are mounted from, DSO's state and the node's
// /run (the agent's log, its vault), /root, /etc, /tmp and /var/log; `docker
// secret inspect` and `docker service inspect` of everything on the
// manager; the argv of every process (the nodes' included). It fails when
// it finds one or could not read a place. Each node runs at least
// minMounts tasks holding a secret: the scan must see their secrets mounts
// (and leave them out), so it is known to have looked where values are.
func scanSwarm(t *testing.T, s *testbed.Swarm, canaries [][]byte, minMounts int) {
	t.Helper()
	sc, err := newLeakScan(canaries)
	if err != nil {
		t.Fatal(err)
	}
	sc.since = firstCanary(t)
	m := s.Manager()
	for _, what := range [][]string{{"secret", "ls", "-q"}, {"service", "ls", "-q"}} {
		ids, stderr, err := m.Exec(t, append([]string{"docker"}, what...)...)
		if err != nil || strings.TrimSpace(ids) == "" {
			t.Fatalf("docker %s in the manager: %v %s", strings.Join(what, " "), err, stderr)
		}
		out, stderr, err := m.Exec(t, append([]string{"docker", what[0], "inspect"}, strings.Fields(ids)...)...)
		if err != nil {
			t.Fatalf("docker %s inspect: %v %s", what[0], err, stderr)
		}
		sc.text("docker "+what[0]+" inspect", out)
	}
	for _, n := range s.Nodes() {
		insp, err := testbed.Docker(t).ContainerInspect(t.Context(), n.ContainerID, client.ContainerInspectOptions{})
		if err != nil || insp.Container.State == nil || insp.Container.State.Pid == 0 {
			t.Fatalf("node %s: no PID to read its files through (%v)", n.Hostname, err)
		}
		root := fmt.Sprintf("/proc/%d/root", insp.Container.State.Pid)
		secrets := 0
		sc.tree(n.Hostname+": /var/lib/docker", place{path: root + "/var/lib/docker", required: true, hasFiles: true,
			skip: func(dir string) bool {
				if ok, _ := filepath.Match(root+"/var/lib/docker/containers/*/mounts/secrets", dir); !ok {
					return false
				}
				var st unix.Statfs_t
				if unix.Statfs(dir, &st) != nil || st.Type != unix.TMPFS_MAGIC {
					return false
				}
				secrets++
				return true
			}})
		if secrets < minMounts {
			t.Errorf("node %s: the scan saw %d task secrets mounts, want at least %d: it did not look where the values are", n.Hostname, secrets, minMounts)
		}
		for _, p := range []string{"/var/lib/dso", "/run", "/root", "/etc", "/tmp", "/var/log"} {
			sc.tree(n.Hostname+": "+p, place{path: root + p, required: p != "/var/lib/dso"})
		}
		if n == m {
			log, err := os.Open(root + nodeAgentLog)
			if err != nil {
				t.Fatalf("the agent's log: %v", err)
			}
			b, _ := io.ReadAll(log)
			_ = log.Close()
			sc.text("the agent's log", string(b))
		}
	}
	sc.processes()
	for _, p := range sc.problems {
		t.Errorf("leak scan: %s", p)
	}
	for _, l := range sc.leaks {
		t.Errorf("LEAK: %s", l)
	}
	t.Logf("leak scan of the Swarm read (files, processes, objects):%s", sc.report())
}
