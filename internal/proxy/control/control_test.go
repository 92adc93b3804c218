package control

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/proxy"
	"github.com/dso-project/dso/internal/testbed"
)

// TestDirectReachesTheProxy: as root on the engine's host, the agent's
// requests reach a proxy container's control socket from the host, with no
// docker exec, and the proxy's own errors come back as errors.
func TestDirectReachesTheProxy(t *testing.T) {
	testbed.NeedRoot(t, "the direct way opens the container's root through /proc")
	docker := testbed.Docker(t)
	id := testbed.RunProxy(t, testbed.BusyboxImage(t), testbed.Network(t), "app", "80:8080")
	inspect := func() client.ContainerInspectResult {
		t.Helper()
		ins, err := docker.ContainerInspect(t.Context(), id, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ins
	}
	ins := inspect()
	send := func(req proxy.Request) (proxy.Reply, error) {
		t.Helper()
		r, handled, err := Direct(t.Context(), ins.Container, req)
		if !handled {
			t.Fatalf("%s: the control socket was not reached from the host", req.Op)
		}
		return r, err
	}
	if _, err := send(proxy.Request{Op: proxy.OpSet, Backends: []string{"10.255.1.2"}}); err != nil {
		t.Fatalf("set: %v", err)
	}
	r, err := send(proxy.Request{Op: proxy.OpStats})
	if err != nil || r.Stats == nil || !slices.Equal(r.Stats.Backends, []string{"10.255.1.2"}) {
		t.Fatalf("stats after the set: %+v, %v; want backends [10.255.1.2]", r.Stats, err)
	}
	_, err = send(proxy.Request{Op: proxy.OpProbe, Backend: "127.0.0.1", Timeout: proxy.Duration(50 * time.Millisecond)})
	if err == nil || !strings.Contains(err.Error(), "proxy probe in container") {
		t.Errorf("a probe of a port nobody listens on: %v; want the proxy's error, with the op and container", err)
	}
	if execs := inspect().Container.ExecIDs; len(execs) != 0 {
		t.Errorf("the proxy container ran %d execs; want none", len(execs))
	}
}
