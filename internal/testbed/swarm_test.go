package testbed_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// TestSwarm starts a 3-node Swarm, runs a 3-replica service with a
// host-mode published port on it from the host's docker CLI, and checks that
// each node's IP answers from the task on that node; after the Swarm is
// removed, no cgroup of its nodes is left on the host.
func TestSwarm(t *testing.T) {
	// Built once per machine (the image) or per test process (the
	// binaries), not timed below.
	testbed.SwarmNodeImage(t)
	testbed.GoBinary(t, "./cmd/docker-dso")
	testbed.GoBinary(t, "./cmd/dso-init")
	var nodeIDs []string
	t.Run("service", func(t *testing.T) {
		start := time.Now()
		s := testbed.NewSwarm(t, 2)
		t.Logf("Swarm of 3 nodes Ready in %v", time.Since(start).Round(time.Millisecond))
		for _, n := range s.Nodes() {
			nodeIDs = append(nodeIDs, n.ContainerID)
		}
		if len(s.Workers()) != 2 || s.Manager().Hostname != "manager" {
			t.Fatalf("manager %s, workers %d; want manager and 2 workers", s.Manager().Hostname, len(s.Workers()))
		}
		image := testbed.TestappImage(t)
		s.LoadImage(t, image)

		// The host's docker CLI drives the manager, as a user's would.
		s.Docker(t, "service", "create", "--detach", "--no-resolve-image", "--name", "web", "--replicas", "3",
			"--replicas-max-per-node", "1", "--endpoint-mode", "dnsrr",
			"--publish", "mode=host,target=8080,published=8080", image)

		// One running task per node.
		byNode := map[string]string{} // Swarm node ID -> container ID of its task
		deadline := time.Now().Add(time.Minute)
		for len(byNode) < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("tasks running on %d nodes after a minute, want 3\n%s", len(byNode), s.Docker(t, "service", "ps", "--no-trunc", "web"))
			}
			time.Sleep(200 * time.Millisecond)
			tasks, err := s.Manager().Client.TaskList(t.Context(), client.TaskListOptions{
				Filters: make(client.Filters).Add("service", "web").Add("desired-state", "running"),
			})
			if err != nil {
				t.Fatal(err)
			}
			clear(byNode)
			for _, task := range tasks.Items {
				if task.Status.State == swarm.TaskStateRunning && task.Status.ContainerStatus != nil {
					byNode[task.NodeID] = task.Status.ContainerStatus.ContainerID
				}
			}
		}
		for _, n := range s.Nodes() {
			id, ok := byNode[n.NodeID]
			if !ok {
				t.Fatalf("no running task on node %s; tasks by node: %v", n.Hostname, byNode)
			}
			// The task's container runs in the node's own engine, under the
			// node's host name.
			if _, err := n.Client.ContainerInspect(t.Context(), id, client.ContainerInspectOptions{}); err != nil {
				t.Errorf("task container %s is not in node %s's engine: %v", id[:12], n.Hostname, err)
			}
			status, body := testbed.HTTPGet(t, fmt.Sprintf("http://%s:8080/env/HOSTNAME", n.IP))
			if status != 200 || body != id[:12] {
				t.Errorf("GET http://%s:8080/env/HOSTNAME (node %s) = %d %q, want 200 %q (its own task)", n.IP, n.Hostname, status, body, id[:12])
			}
		}

		out, stderr, err := s.Manager().Exec(t, "docker", "dso", "version")
		if err != nil || !strings.Contains(out, "dso") {
			t.Errorf("docker dso version in the manager: %v\n%s%s", err, out, stderr)
		}
		if _, _, err := s.Manager().Exec(t, "test", "-x", testbed.PluginDir+"/dso-init"); err != nil {
			t.Errorf("dso-init in the manager: %v", err)
		}
		if _, _, err := s.Manager().Exec(t, "false"); err == nil {
			t.Error("Exec of false: no error")
		}
		logMemory(t, s)

		// A worker that dies: it leaves the Swarm at once, and Swarm
		// replaces the task it ran (Orphaned); the replacement waits for a
		// node, since each of the two left already has one task and port
		// 8080 taken.
		gone := s.Workers()[1]
		s.RemoveNode(t, gone)
		if len(s.Workers()) != 1 || len(s.Nodes()) != 2 {
			t.Errorf("after RemoveNode: %d workers, %d nodes; want 1 and 2", len(s.Workers()), len(s.Nodes()))
		}
		nodes, err := s.Manager().Client.NodeList(t.Context(), client.NodeListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes.Items {
			if n.ID == gone.NodeID {
				t.Errorf("node %s is still in the Swarm after RemoveNode", gone.Hostname)
			}
		}
		start = time.Now()
		deadline = time.Now().Add(time.Minute)
		for {
			tasks, err := s.Manager().Client.TaskList(t.Context(), client.TaskListOptions{
				Filters: make(client.Filters).Add("service", "web").Add("desired-state", "running"),
			})
			if err != nil {
				t.Fatal(err)
			}
			onGone := 0
			for _, task := range tasks.Items {
				if task.NodeID == gone.NodeID {
					onGone++
				}
			}
			if onGone == 0 && len(tasks.Items) == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a minute after RemoveNode, %d of web's %d tasks are still meant to run on the removed node\n%s", onGone, len(tasks.Items), s.Docker(t, "service", "ps", "web"))
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("the removed node's task replaced %v after RemoveNode", time.Since(start).Round(100*time.Millisecond))
	})

	// Nothing of the nodes stays in the host's cgroups (a node's tasks live
	// under its own cgroup, removed with it).
	if len(nodeIDs) == 0 {
		return
	}
	dirs, err := filepath.Glob("/sys/fs/cgroup/*/docker")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no /sys/fs/cgroup/*/docker to check for leftover cgroups (%v)", err)
	}
	for _, dir := range dirs {
		for _, id := range nodeIDs {
			if _, err := os.Stat(filepath.Join(dir, id)); err == nil {
				t.Errorf("cgroup %s of a removed node is still there", filepath.Join(dir, id))
			}
		}
	}
}

// logMemory logs each node's memory use, for the figures of TESTBED.md.
func logMemory(t *testing.T, s *testbed.Swarm) {
	for _, n := range s.Nodes() {
		out, _, err := n.Exec(t, "sh", "-c", "cat /sys/fs/cgroup/memory/memory.usage_in_bytes")
		if err == nil {
			var b int64
			_, _ = fmt.Sscan(out, &b)
			t.Logf("node %s: memory %d MiB", n.Hostname, b>>20)
		}
	}
}
