package testbed

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// RunContainer creates and starts a container and removes it (with its
// anonymous volumes) at t.Cleanup. It returns the container's ID.
func RunContainer(t testing.TB, opts client.ContainerCreateOptions) string {
	t.Helper()
	cli := Docker(t)
	created, err := cli.ContainerCreate(t.Context(), opts)
	if err != nil {
		t.Fatalf("testbed: creating container: %v", err)
	}
	id := created.ID
	t.Cleanup(func() {
		ctx, cancel := cleanupContext()
		defer cancel()
		if _, err := cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
			t.Errorf("testbed: cleanup: removing container %s: %v", id[:12], err)
		}
	})
	if _, err := cli.ContainerStart(t.Context(), id, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("testbed: starting container %s: %v", id[:12], err)
	}
	return id
}

// PublishLocal returns a port map publishing the container port (such as
// "8080/tcp") on 127.0.0.1 at a port the engine picks; read it back with
// HostAddr.
func PublishLocal(port string) network.PortMap {
	return network.PortMap{
		network.MustParsePort(port): {{HostIP: netip.MustParseAddr("127.0.0.1")}},
	}
}

// HostAddr returns "127.0.0.1:PORT" where the container publishes port
// (such as "8080/tcp") on the host's loopback.
func HostAddr(t testing.TB, containerID, port string) string {
	t.Helper()
	res, err := Docker(t).ContainerInspect(t.Context(), containerID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("testbed: inspecting container %s: %v", containerID, err)
	}
	p := network.MustParsePort(port)
	var bindings []network.PortBinding
	if ns := res.Container.NetworkSettings; ns != nil {
		bindings = ns.Ports[p]
	}
	for _, b := range bindings {
		if b.HostPort != "" && (!b.HostIP.IsValid() || b.HostIP.IsLoopback() || b.HostIP.IsUnspecified()) {
			return net.JoinHostPort("127.0.0.1", b.HostPort)
		}
	}
	t.Fatalf("testbed: container %s publishes no host port for %s (bindings %v)", containerID, port, bindings)
	return ""
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

// WaitExit waits up to timeout for the container to stop and returns its exit
// status; it fails the test when the container is still running by then.
func WaitExit(t testing.TB, containerID string, timeout time.Duration) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	wait := Docker(t).ContainerWait(ctx, containerID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case res := <-wait.Result:
		if res.Error != nil && res.Error.Message != "" {
			t.Fatalf("testbed: waiting for container %s: %s", containerID, res.Error.Message)
		}
		return res.StatusCode
	case err := <-wait.Error:
		t.Fatalf("testbed: container %s did not stop within %v: %v", containerID, timeout, err)
		return 0
	}
}

// Logs returns what the container wrote so far to stdout and to stderr, for
// checking output (for example, that no secret value appears in it).
func Logs(t testing.TB, containerID string) (stdout, stderr string) {
	t.Helper()
	rc, err := Docker(t).ContainerLogs(t.Context(), containerID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("testbed: logs of container %s: %v", containerID, err)
	}
	defer rc.Close()
	var out, errOut strings.Builder
	if _, err := stdcopy.StdCopy(&out, &errOut, rc); err != nil {
		t.Fatalf("testbed: reading logs of container %s: %v", containerID, err)
	}
	return out.String(), errOut.String()
}

// ExecOptions are the optional settings of Exec.
type ExecOptions struct {
	User string   // as in `docker exec -u`; "" is the container's user
	Env  []string // added to the container's environment
}

// Exec runs cmd in the running container, as `docker exec` does, and returns
// its combined stdout and stderr and its exit code. It fails the test only
// when the command cannot be run at all.
func Exec(t testing.TB, containerID string, opts ExecOptions, cmd ...string) (output string, code int) {
	t.Helper()
	cli := Docker(t)
	ex, err := cli.ExecCreate(t.Context(), containerID, client.ExecCreateOptions{
		User: opts.User, Env: opts.Env, Cmd: cmd, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		t.Fatalf("testbed: exec %q in container %s: %v", cmd, containerID[:12], err)
	}
	att, err := cli.ExecAttach(t.Context(), ex.ID, client.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("testbed: exec %q in container %s: %v", cmd, containerID[:12], err)
	}
	defer att.Close()
	var out strings.Builder
	if _, err := stdcopy.StdCopy(&out, &out, att.Reader); err != nil {
		t.Fatalf("testbed: exec %q in container %s: reading output: %v", cmd, containerID[:12], err)
	}
	for {
		res, err := cli.ExecInspect(t.Context(), ex.ID, client.ExecInspectOptions{})
		if err != nil {
			t.Fatalf("testbed: exec %q in container %s: %v", cmd, containerID[:12], err)
		}
		if !res.Running {
			return out.String(), res.ExitCode
		}
		time.Sleep(20 * time.Millisecond)
	}
}
