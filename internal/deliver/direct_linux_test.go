package deliver

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/testbed"
)

// runInit runs dso-init in a busybox container as `docker dso up` wires it
// (bind-mounted, a tmpfs at /run/dso), in front of sh -c script.
func runInit(t *testing.T, script string) string {
	t.Helper()
	return testbed.RunContainer(t, client.ContainerCreateOptions{
		Config: &container.Config{
			Image:      testbed.BusyboxImage(t),
			Entrypoint: []string{initproc.InitPath, "--", "sh", "-c", script},
		},
		HostConfig: &container.HostConfig{
			Tmpfs: map[string]string{initproc.RunDir: "mode=0755"},
			Mounts: []mount.Mount{{
				Type: mount.TypeBind, Source: testbed.GoBinary(t, "./cmd/dso-init"), Target: initproc.InitPath, ReadOnly: true,
			}},
		},
	})
}

// TestSendReachesTheInit delivers a canary both ways, straight to the
// init's socket and through docker exec, and checks that the application
// started with it.
func TestSendReachesTheInit(t *testing.T) {
	testbed.NeedRoot(t, "the direct way opens the container's root through /proc")
	docker := testbed.Docker(t)
	for _, way := range []string{"direct", "exec"} {
		t.Run(way, func(t *testing.T) {
			id := runInit(t, `printf %s "$TOKEN" > /tmp/token; exec sleep 600`)
			value := []byte("canary-" + way + "-" + rand.Text())
			p := NewPayload([]Value{{Var: "TOKEN", Data: value}}, "")
			data, err := encode(p)
			if err != nil {
				t.Fatal(err)
			}
			switch way {
			case "direct":
				ins, err := docker.ContainerInspect(t.Context(), id, client.ContainerInspectOptions{})
				if err != nil {
					t.Fatal(err)
				}
				answer, handled, err := direct(t.Context(), ins.Container, data, 10*time.Second)
				if !handled || err != nil || string(answer) != "ok" {
					t.Fatalf("direct delivery: handled %v, answer %q, error %v", handled, answer, err)
				}
			case "exec":
				if err := sendExec(t.Context(), docker, id, p, data); err != nil {
					t.Fatalf("delivery by exec: %v", err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				got, _ := testbed.Exec(t, id, testbed.ExecOptions{}, "cat", "/tmp/token")
				if got == string(value) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the application did not start with the delivered value (it wrote %d bytes)", len(got))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestDirectStaysInTheContainer plants, in a container, /run/dso as an
// absolute symlink to a directory of the host where a socket listens: the
// direct way must resolve it inside the container's root (where it leads
// nowhere) and leave the delivery to docker exec, never reaching the host's
// socket.
func TestDirectStaysInTheContainer(t *testing.T) {
	testbed.NeedRoot(t, "the direct way opens the container's root through /proc")
	docker := testbed.Docker(t)
	hostDir := t.TempDir()
	accepted := listenOnHost(t, hostDir, false)
	id := testbed.RunContainer(t, client.ContainerCreateOptions{Config: &container.Config{
		Image: testbed.BusyboxImage(t),
		Cmd:   []string{"sh", "-c", "mkdir -p /run && ln -s " + hostDir + " /run/dso && exec sleep 600"},
	}})
	ins, err := docker.ContainerInspect(t.Context(), id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	naive := "/proc/" + strconv.Itoa(ins.Container.State.Pid) + "/root" + initproc.SocketPath
	deadline := time.Now().Add(10 * time.Second)
	for {
		if target, err := os.Readlink(strings.TrimSuffix(naive, "/init.sock")); err == nil && target == hostDir {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the container did not plant its symlink")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The trap works: a path resolved through /proc/PID/root the plain way
	// follows the absolute symlink out to the host.
	c, err := net.Dial("unix", naive)
	if err != nil {
		t.Fatalf("the planted symlink does not lead to the host's socket, so this test checks nothing: %v", err)
	}
	c.Close()
	waitAccepted(t, accepted, 1)

	answer, handled, err := direct(t.Context(), ins.Container, []byte(`{"env":{}}`), 300*time.Millisecond)
	if handled {
		t.Errorf("direct delivery handled the container (answer %q, error %v), want it left to docker exec", answer, err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := accepted.Load(); n != 1 {
		t.Errorf("the host's socket took %d connections, want only the test's own", n)
	}
}

// listenOnHost listens at dir/init.sock on the host until the test ends
// and counts the connections it takes: closed at once, or (silent) kept
// open, read from and answered never.
func listenOnHost(t *testing.T, dir string, silent bool) *atomic.Int32 {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "init.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			if silent {
				held = append(held, c)
			} else {
				c.Close()
			}
		}
	}()
	return &accepted
}

func waitAccepted(t *testing.T, n *atomic.Int32, want int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("the host's socket took %d connections, want %d", n.Load(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInContainer: a process outside the container (this one) is not
// taken for the container's.
// TestDirectGivesUpOnASilentSocket: a listener at the init's socket that
// takes the payload and never answers (a hijacking workload) holds the
// delivery only until its context ends.
func TestDirectGivesUpOnASilentSocket(t *testing.T) {
	testbed.NeedRoot(t, "the direct way opens the container's root through /proc")
	docker := testbed.Docker(t)
	run := t.TempDir()
	accepted := listenOnHost(t, run, true)
	id := testbed.RunContainer(t, client.ContainerCreateOptions{
		Config: &container.Config{Image: testbed.BusyboxImage(t), Cmd: []string{"sleep", "600"}},
		HostConfig: &container.HostConfig{Mounts: []mount.Mount{{
			Type: mount.TypeBind, Source: run, Target: initproc.RunDir,
		}}},
	})
	ins, err := docker.ContainerInspect(t.Context(), id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, handled, err := direct(ctx, ins.Container, []byte(`{"env":{}}`), time.Second)
		if !handled {
			err = errors.New("not handled")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("direct delivery to a silent socket ended with %v, want the context's deadline", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("direct delivery to a silent socket did not end with its context")
	}
	if accepted.Load() != 1 {
		t.Errorf("the silent socket took %d connections, want 1 (else this test checks nothing)", accepted.Load())
	}
}
