package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/proxy"
	"github.com/dso-project/dso/internal/proxy/control"
	"github.com/dso-project/dso/internal/testbed"
)

// TestProxySwitchesBackendsUnderLoad runs the proxy container as `docker dso
// up` will (FROM-scratch image, dso-init bind-mounted, user 65534 listening
// on port 80) in front of two testapp backends, and switches between them
// with proxy-ctl over docker exec while clients open new connections all
// the time and one long-lived connection stays open.
func TestProxySwitchesBackendsUnderLoad(t *testing.T) {
	cli := testbed.Docker(t)
	image := testbed.TestappImage(t)
	net := testbed.Network(t)
	backend := func(color string, aliases ...string) string {
		id := testbed.RunContainer(t, client.ContainerCreateOptions{
			Config:           &container.Config{Image: image, Env: []string{"COLOR=" + color}},
			NetworkingConfig: testbed.OnNetwork(net, aliases...),
		})
		return testbed.ContainerIP(t, id, net).String()
	}
	// "app" stands for the compose service name: the proxy's first backend.
	blue := backend("blue", "app")
	green := backend("green")
	proxyID := testbed.RunProxy(t, image, net, "app", []string{"80:8080"})
	addr := testbed.HostAddr(t, proxyID, "80/tcp")
	eventually(t, addr, "/env/COLOR", "blue")

	ctl := func(req proxy.Request) proxy.Reply {
		t.Helper()
		r, err := control.Send(t.Context(), cli, proxyID, req)
		if err != nil {
			t.Fatalf("proxy %s: %v", req.Op, err)
		}
		return r
	}
	stats := func() proxy.Stats { return *ctl(proxy.Request{Op: proxy.OpStats}).Stats }

	load := startLoad(t, addr, "/healthz", 4, false)
	long := dialKeepAlive(t, addr)
	if got, err := long.get("/env/COLOR"); err != nil || got != "blue" {
		t.Fatalf("long-lived connection: %q, %v", got, err)
	}
	if _, err := control.Send(t.Context(), cli, proxyID, proxy.Request{Op: proxy.OpDrain, Backend: "app", Timeout: proxy.Duration(time.Second)}); err == nil || !strings.Contains(err.Error(), "still takes new connections") {
		t.Fatalf("drain of the current backend through proxy-ctl: %v", err)
	}

	old := "app"
	for round := range 6 {
		to, color := green, "green"
		if round%2 == 1 {
			to, color = blue, "blue"
		}
		ctl(proxy.Request{Op: proxy.OpProbe, Backend: to, Timeout: proxy.Duration(5 * time.Second)})
		if round == 2 { // the stop-first shape: hold new connections, then switch
			ctl(proxy.Request{Op: proxy.OpHold, Timeout: proxy.Duration(30 * time.Second)})
			waitFor(t, "connections held", func() bool { return stats().Held > 0 })
		}
		before := load.done()
		reply := ctl(proxy.Request{Op: proxy.OpSet, Backends: []string{to}})
		if reply.SwitchedAt.IsZero() {
			t.Fatalf("round %d: set returned no switch time", round)
		}
		if got := fresh(t, addr); got != color {
			t.Fatalf("round %d: a new connection after the switch reached %s, want %s", round, got, color)
		}
		waitFor(t, "load to go on", func() bool { return load.done() > before+10 })

		// Idle keep-alive connections stay on the old backend: ours, and
		// the one of the first probe's HTTP client.
		var idle int
		if round == 0 {
			if got, err := long.get("/env/COLOR"); err != nil || got != "blue" {
				t.Fatalf("long-lived connection after the switch: %q, %v; want it still on blue", got, err)
			}
			if idle = stats().Connections["app"]; idle < 1 {
				t.Fatalf("stats show %d connections on the old backend, want the long-lived one", idle)
			}
		}
		timeout := 10 * time.Second
		if round == 0 {
			timeout = 2 * time.Second // the long-lived connection never ends by itself
		}
		d := ctl(proxy.Request{Op: proxy.OpDrain, Backend: old, Timeout: proxy.Duration(timeout)}).Drain
		if round == 0 {
			if d.Closed != idle {
				t.Fatalf("round 0: drain = %+v; want the %d idle connections closed", d, idle)
			}
			if _, err := long.get("/env/COLOR"); err == nil {
				t.Fatal("the long-lived connection still works after the drain closed it")
			}
		} else if d.Closed != 0 {
			t.Fatalf("round %d: drain = %+v; short requests must drain by themselves", round, d)
		}
		old = to
	}

	ok, failed := load.stop()
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed during the switches, first: %s", len(failed), ok+len(failed), failed[0])
	}
	s := stats()
	if p := s.Ports[0]; p.Dropped != 0 || p.Listen != 80 || p.Target != 8080 || p.Accepted < uint64(ok) {
		t.Fatalf("port stats: %+v after %d requests", p, ok)
	}
	t.Logf("%d requests through 6 switches, none failed; port stats %+v", ok, s.Ports[0])

	canary := string(canary(t, "proxy"))
	testbed.HTTPGet(t, "http://"+addr+"/env/"+canary)
	if _, err := cli.ContainerStop(t.Context(), proxyID, client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	if code := testbed.WaitExit(t, proxyID, 30*time.Second); code != 0 {
		t.Fatalf("the proxy exited %d on SIGTERM, want 0", code)
	}
	stdout, stderr := testbed.Logs(t, proxyID)
	if strings.Contains(stdout+stderr, canary) {
		t.Fatalf("traffic reached the proxy's log:\n%s", stderr)
	}
	if !strings.Contains(stderr, "backends set") || !strings.Contains(stderr, "proxy stopping") {
		t.Fatalf("the proxy's log misses the switches or the stop:\n%s", stderr)
	}
}

// fresh asks for the color on a new connection.
func fresh(t *testing.T, addr string) string {
	t.Helper()
	k := dialKeepAlive(t, addr)
	defer k.c.Close()
	got, err := k.get("/env/COLOR")
	if err != nil {
		t.Fatalf("GET /env/COLOR on a new connection: %v", err)
	}
	return got
}

// keepAlive is one HTTP/1.1 connection that stays open between requests.
type keepAlive struct {
	c net.Conn
	r *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAlive {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{c: c, r: bufio.NewReader(c)}
}

func (k *keepAlive) get(path string) (string, error) {
	k.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: proxy\r\n\r\n", path); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
