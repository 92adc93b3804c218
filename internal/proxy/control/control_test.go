package control

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/proxy"
	"github.com/dso-project/dso/internal/testbed"
)

// TestEachWayReachesTheProxy: the agent's requests reach a proxy
// container's control socket each way: from the host (as root on the
// engine's host) with no docker exec at all, through a session (one exec
// for many requests) and through an exec each; the proxy's own errors come
// back as errors, naming the op and the container.
func TestEachWayReachesTheProxy(t *testing.T) {
	testbed.NeedRoot(t, "the direct way opens the container's root through /proc")
	docker := testbed.Docker(t)
	id := testbed.RunProxy(t, testbed.BusyboxImage(t), testbed.Network(t), "app", []string{"80:8080"})
	inspect := func() client.ContainerInspectResult {
		t.Helper()
		ins, err := docker.ContainerInspect(t.Context(), id, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ins
	}
	session, err := Open(t.Context(), docker, id)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	ways := []struct {
		name string
		send func(context.Context, proxy.Request) (proxy.Reply, error)
	}{
		{"direct", func(ctx context.Context, req proxy.Request) (proxy.Reply, error) {
			r, handled, err := Direct(ctx, inspect().Container, req)
			if !handled {
				t.Fatalf("direct %s: the control socket was not reached from the host", req.Op)
			}
			return r, err
		}},
		{"session", session.Send},
		{"exec", func(ctx context.Context, req proxy.Request) (proxy.Reply, error) { return Send(ctx, docker, id, req) }},
	}
	for i, way := range ways {
		if i == 1 {
			if execs := inspect().Container.ExecIDs; len(execs) != 1 {
				t.Errorf("after the direct way, the proxy container ran %d execs; want the session's only", len(execs))
			}
		}
		backend := "10.255.1." + string(rune('1'+i))
		if _, err := way.send(t.Context(), proxy.Request{Op: proxy.OpSet, Backends: []string{backend}}); err != nil {
			t.Fatalf("%s: set: %v", way.name, err)
		}
		r, err := way.send(t.Context(), proxy.Request{Op: proxy.OpStats})
		if err != nil || r.Stats == nil || !slices.Equal(r.Stats.Backends, []string{backend}) {
			t.Fatalf("%s: stats after the set: %+v, %v; want backends [%s]", way.name, r.Stats, err, backend)
		}
		_, err = way.send(t.Context(), proxy.Request{Op: proxy.OpProbe, Backend: "127.0.0.1", Timeout: proxy.Duration(50 * time.Millisecond)})
		if err == nil || !strings.Contains(err.Error(), "proxy probe in container "+id[:12]) {
			t.Errorf("%s: a probe of a port nobody listens on: %v; want the proxy's error, with the op and container", way.name, err)
		}
	}
}
