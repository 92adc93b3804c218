package testbed

import (
	"context"
	"fmt"
	"io"
	"maps"
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
	if opts.Config != nil {
		// Labeled, so that a run killed before its cleanup can be swept.
		cfg := *opts.Config
		cfg.Labels = maps.Clone(cfg.Labels)
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		cfg.Labels[Label] = "1"
		opts.Config = &cfg
	}
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
	User  string    // as in `docker exec -u`; "" is the container's user
	Env   []string  // added to the container's environment
	Stdin io.Reader // when set, the command's standard input, closed at its end
}

// Exec runs cmd in the running container, as `docker exec` does, and returns
// its combined stdout and stderr and its exit code. It fails the test only
// when the command cannot be run at all.
func Exec(t testing.TB, containerID string, opts ExecOptions, cmd ...string) (output string, code int) {
	t.Helper()
	var out strings.Builder
	code, err := execIn(t.Context(), Docker(t), containerID, opts, cmd, &out, &out)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	return out.String(), code
}

// execIn runs cmd in the running container through cli, copies its output
// to stdout and stderr, and returns its exit code; an error is a command
// that could not be run at all.
func execIn(ctx context.Context, cli client.APIClient, containerID string, opts ExecOptions, cmd []string, stdout, stderr io.Writer) (int, error) {
	fail := func(err error) (int, error) {
		return 0, fmt.Errorf("exec %q in container %s: %w", cmd, shortID(containerID), err)
	}
	ex, err := cli.ExecCreate(ctx, containerID, client.ExecCreateOptions{
		User: opts.User, Env: opts.Env, Cmd: cmd, AttachStdin: opts.Stdin != nil, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return fail(err)
	}
	att, err := cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return fail(err)
	}
	defer att.Close()
	if opts.Stdin != nil {
		go func() {
			_, _ = io.Copy(att.Conn, opts.Stdin)
			_ = att.CloseWrite()
		}()
	}
	if _, err := stdcopy.StdCopy(stdout, stderr, att.Reader); err != nil {
		return fail(fmt.Errorf("reading output: %w", err))
	}
	for {
		res, err := cli.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
		if err != nil {
			return fail(err)
		}
		if !res.Running {
			return res.ExitCode, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
