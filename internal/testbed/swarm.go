package testbed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// swarmNode is the image of a Swarm node: Debian 12 with its docker.io
// (Docker 20.10) whose entrypoint makes the cgroup controllers of the
// container's private cgroup namespace writable (a plain `remount,rw`
// fails with "mount point is busy") and runs dockerd, listening on its unix
// socket and, without TLS, on TCP port 2375 (with TLS unset dockerd would
// sleep 15 s on purpose).
var swarmNode = rootfsImage{
	name:     "swarm-node",
	packages: []string{"ca-certificates", "curl", "docker.io", "iproute2", "iptables", "mount", "procps"},
	changes: []string{
		`ENTRYPOINT ["/bin/sh", "-c", "for d in /sys/fs/cgroup/*; do mount -o remount,bind,rw \"$d\"; done; exec dockerd \"$@\"", "dso-node"]`,
		`CMD ["-H", "unix:///var/run/docker.sock", "-H", "tcp://0.0.0.0:2375", "--tls=false", "--storage-driver=overlay2"]`,
	},
}

var swarmNodeImage = sync.OnceValues(func() (string, error) {
	e := engineOnce()
	if e.err != nil {
		return "", e.err
	}
	return ensureRootfsImage(e.cli, swarmNode)
})

// SwarmNodeImage returns the image Swarm runs its nodes from, built like
// DebianImage: once per machine from a root file system made by mmdebstrap
// (kept as ${DSO_TOOLS_DIR:-~/.cache/dso-tools}/swarm-node-<key>.tar), under
// dso-testbed/swarm-node:<key>, a hash of its recipe. It is shared by every
// test run: tests must never remove it.
func SwarmNodeImage(t testing.TB) string {
	t.Helper()
	Docker(t)
	ref, err := swarmNodeImage()
	if err != nil {
		t.Fatalf("testbed: Swarm node image: %v", err)
	}
	return ref
}

// PluginDir is where the packages install docker-dso and dso-init
// (scripts/nfpm.yaml), and where Swarm mounts them in every node.
const PluginDir = "/usr/libexec/docker/cli-plugins"

// swarmStartTimeout bounds a node's dockerd start and the wait for every
// node to be Ready.
const swarmStartTimeout = 2 * time.Minute

// Swarm is a Docker Swarm of node containers (dockerd in a container) on a
// bridge network of the host engine: a manager and workers.
type Swarm struct {
	// Network is the host engine's bridge network the nodes are on.
	Network string
	mu      sync.Mutex
	nodes   []*SwarmNode // the manager first
}

// SwarmNode is one node of a Swarm.
type SwarmNode struct {
	Name        string     // the node container's name on the host engine
	Hostname    string     // its host name: the node's name in `docker node ls`
	ContainerID string     // the node container's ID on the host engine
	IP          netip.Addr // its address on the Swarm's network; its dockerd listens on IP:2375
	NodeID      string     // its Swarm node ID
	// Client talks to the node's own dockerd (API version negotiated).
	Client *client.Client
}

// Host is the node's DOCKER_HOST: tcp://IP:2375.
func (n *SwarmNode) Host() string { return "tcp://" + net.JoinHostPort(n.IP.String(), "2375") }

// NewSwarm starts a Swarm of one manager and workers worker nodes and returns
// once every node is Ready. Each node is a container of SwarmNodeImage on a
// new bridge network, with its own cgroup namespace, SYS_ADMIN and
// NET_ADMIN, seccomp and AppArmor unconfined, tmpfs at /run and
// /var/lib/docker (nothing of a node is written to the host's disk), and
// DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 so that `docker service create` in
// a node does not ask a registry. The repository's static docker-dso and
// dso-init are bind-mounted read-only in every node at PluginDir, where the
// packages install them, so `docker dso` runs in any node.
//
// The manager advertises its address on the network; the host reaches every
// node's dockerd and host-mode published ports at the node's IP. The nodes
// (with anything running in them) and the network are removed at t.Cleanup,
// even when the test fails. Without an engine the test is skipped, or fails
// under CI.
func NewSwarm(t testing.TB, workers int) *Swarm {
	t.Helper()
	image := SwarmNodeImage(t)
	s := &Swarm{Network: Network(t)}
	binds := []mount.Mount{
		{Type: mount.TypeBind, Source: GoBinary(t, "./cmd/docker-dso"), Target: PluginDir + "/docker-dso", ReadOnly: true},
		{Type: mount.TypeBind, Source: GoBinary(t, "./cmd/dso-init"), Target: PluginDir + "/dso-init", ReadOnly: true},
	}
	suffix := uniqueSuffix()
	for i := 0; i <= workers; i++ {
		hostname := "manager"
		if i > 0 {
			hostname = fmt.Sprintf("worker%d", i)
		}
		name := fmt.Sprintf("dsotest-swarm-%s-%s", suffix, hostname)
		id := RunContainer(t, client.ContainerCreateOptions{
			Name: name,
			Config: &container.Config{
				Image:    image,
				Hostname: hostname,
				Env:      []string{"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1"},
				Labels:   map[string]string{Label: "1"},
			},
			HostConfig: &container.HostConfig{
				CgroupnsMode: container.CgroupnsModePrivate,
				CapAdd:       []string{"SYS_ADMIN", "NET_ADMIN"},
				SecurityOpt:  []string{"seccomp=unconfined", "apparmor=unconfined"},
				Tmpfs:        map[string]string{"/run": "", "/var/lib/docker": "exec"},
				Mounts:       binds,
			},
			NetworkingConfig: OnNetwork(s.Network),
		})
		n := &SwarmNode{Name: name, Hostname: hostname, ContainerID: id, IP: ContainerIP(t, id, s.Network)}
		c, err := client.New(client.WithHost(n.Host()))
		if err != nil {
			t.Fatalf("testbed: client of Swarm node %s: %v", name, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		n.Client = c
		s.nodes = append(s.nodes, n)
	}

	ctx, cancel := context.WithTimeout(t.Context(), swarmStartTimeout)
	defer cancel()
	for _, n := range s.nodes {
		if err := waitDockerd(ctx, n.Client); err != nil {
			out, _ := Logs(t, n.ContainerID)
			t.Fatalf("testbed: the dockerd of Swarm node %s did not answer: %v\n%s", n.Name, err, tail(out, 4000))
		}
	}
	m := s.nodes[0]
	if _, err := m.Client.SwarmInit(ctx, client.SwarmInitOptions{ListenAddr: "0.0.0.0:2377", AdvertiseAddr: m.IP.String()}); err != nil {
		t.Fatalf("testbed: swarm init on %s: %v", m.Name, err)
	}
	sw, err := m.Client.SwarmInspect(ctx, client.SwarmInspectOptions{})
	if err != nil {
		t.Fatalf("testbed: swarm inspect on %s: %v", m.Name, err)
	}
	for _, w := range s.nodes[1:] {
		if _, err := w.Client.SwarmJoin(ctx, client.SwarmJoinOptions{
			ListenAddr: "0.0.0.0:2377", AdvertiseAddr: w.IP.String(),
			RemoteAddrs: []string{net.JoinHostPort(m.IP.String(), "2377")}, JoinToken: sw.Swarm.JoinTokens.Worker,
		}); err != nil {
			t.Fatalf("testbed: swarm join of %s: %v", w.Name, err)
		}
	}
	for _, n := range s.nodes {
		info, err := n.Client.Info(ctx, client.InfoOptions{})
		if err != nil {
			t.Fatalf("testbed: docker info on %s: %v", n.Name, err)
		}
		n.NodeID = info.Info.Swarm.NodeID
	}
	if err := s.waitReady(ctx); err != nil {
		t.Fatalf("testbed: %v", err)
	}
	return s
}

// waitDockerd waits for the dockerd behind c to answer.
func waitDockerd(ctx context.Context, c *client.Client) error {
	for {
		_, err := c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitReady waits until the manager lists every node as Ready.
func (s *Swarm) waitReady(ctx context.Context) error {
	m := s.Manager()
	want := s.Nodes()
	var last string
	for {
		list, err := m.Client.NodeList(ctx, client.NodeListOptions{})
		if err == nil {
			state := map[string]swarm.NodeState{}
			for _, n := range list.Items {
				state[n.ID] = n.Status.State
			}
			ready := 0
			var states []string
			for _, n := range want {
				if state[n.NodeID] == swarm.NodeStateReady {
					ready++
				}
				states = append(states, fmt.Sprintf("%s=%s", n.Hostname, state[n.NodeID]))
			}
			if ready == len(want) {
				return nil
			}
			last = strings.Join(states, " ")
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("Swarm nodes not Ready: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Manager is the Swarm's manager node.
func (s *Swarm) Manager() *SwarmNode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[0]
}

// Workers are the Swarm's worker nodes still in it (see RemoveNode).
func (s *Swarm) Workers() []*SwarmNode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*SwarmNode(nil), s.nodes[1:]...)
}

// Nodes are the manager and the workers.
func (s *Swarm) Nodes() []*SwarmNode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*SwarmNode(nil), s.nodes...)
}

// Host is the DOCKER_HOST that drives the manager from the host
// (tcp://IP:2375): `DOCKER_HOST=$(s.Host()) docker service ls` and `docker
// dso` run on the host act on the Swarm.
func (s *Swarm) Host() string { return s.Manager().Host() }

// Docker runs the host's docker CLI on the manager (DOCKER_HOST=Host()),
// as a user on the host would, and returns its combined output; it fails
// the test when the command fails.
func (s *Swarm) Docker(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+s.Host())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testbed: DOCKER_HOST=%s docker %s: %v\n%s", s.Host(), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Exec runs argv in the node, as `docker exec NODE argv...` does, and
// returns its stdout and stderr. err is not nil when the command could not
// be run or exited with a non-zero status.
func (n *SwarmNode) Exec(t testing.TB, argv ...string) (stdout, stderr string, err error) {
	t.Helper()
	return n.ExecInput(t, nil, argv...)
}

// ExecInput is Exec with stdin as the command's standard input (nil: none),
// for values that must not be in argv.
func (n *SwarmNode) ExecInput(t testing.TB, stdin io.Reader, argv ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut strings.Builder
	code, err := execIn(t.Context(), Docker(t), n.ContainerID, ExecOptions{Stdin: stdin}, argv, &out, &errOut)
	if err == nil && code != 0 {
		err = fmt.Errorf("%q in Swarm node %s: exit status %d", argv, n.Hostname, code)
	}
	return out.String(), errOut.String(), err
}

// LoadImage copies the host engine's image ref into every node, as `docker
// save ref | docker load` does; services then run it with no registry
// (create them with --no-resolve-image, or from a node's CLI, where
// DOCKER_SERVICE_PREFER_OFFLINE_IMAGE is set).
func (s *Swarm) LoadImage(t testing.TB, ref string) {
	t.Helper()
	saved, err := Docker(t).ImageSave(t.Context(), []string{ref})
	if err != nil {
		t.Fatalf("testbed: saving image %s: %v", ref, err)
	}
	var buf bytes.Buffer
	_, err = io.Copy(&buf, saved)
	_ = saved.Close()
	if err != nil {
		t.Fatalf("testbed: saving image %s: %v", ref, err)
	}
	for _, n := range s.Nodes() {
		res, err := n.Client.ImageLoad(t.Context(), bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("testbed: loading image %s into %s: %v", ref, n.Hostname, err)
		}
		log, err := readBuildOutput(res)
		_ = res.Close()
		if err != nil {
			t.Fatalf("testbed: loading image %s into %s: %v\n%s", ref, n.Hostname, err, log)
		}
	}
}

// RemoveNode takes a worker out as a machine that dies does: its container
// is removed at once (with whatever runs in it), then the manager removes
// the node from the Swarm (`docker node rm --force`), so that Swarm places
// its tasks elsewhere now rather than after its heartbeat times out.
func (s *Swarm) RemoveNode(t testing.TB, n *SwarmNode) {
	t.Helper()
	if n == s.Manager() {
		t.Fatalf("testbed: RemoveNode: %s is the manager", n.Hostname)
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	if _, err := Docker(t).ContainerRemove(ctx, n.ContainerID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
		t.Fatalf("testbed: removing Swarm node %s: %v", n.Hostname, err)
	}
	s.mu.Lock()
	for i, o := range s.nodes {
		if o == n {
			s.nodes = append(s.nodes[:i:i], s.nodes[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	if _, err := s.Manager().Client.NodeRemove(ctx, n.NodeID, client.NodeRemoveOptions{Force: true}); err != nil {
		t.Fatalf("testbed: docker node rm --force %s: %v", n.Hostname, err)
	}
}
