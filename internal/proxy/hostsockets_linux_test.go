package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// socketsReq passes files to the proxy's control socket with a sockets
// request.
func socketsReq(t *testing.T, sock string, req Request, files ...*os.File) Reply {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data, _ := json.Marshal(req)
	r, _, err := Exchange(c, data, files...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// hostSockets makes n host sockets for prefixes; the test closes its copies.
func hostSocketsFor(t *testing.T, prefixes []netip.Prefix, n int) []*os.File {
	t.Helper()
	files, err := NewHostSockets(prefixes, nil, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { CloseFiles(files) })
	return files
}

// TestHostSocketReachesOnlyItsPrefixes: a host socket connects to an
// address within its prefixes; to one outside them (here the host's own
// loopback, where the host's services listen) the connection never
// completes, since the answer is dropped, nor to an address excluded
// within them; and the filter cannot be taken off.
func TestHostSocketReachesOnlyItsPrefixes(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "host")
	to := netip.MustParseAddrPort(b.ln.Addr().String())

	ok := hostSocketsFor(t, loopback, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dialFrom(ctx, ok, to)
	if err != nil {
		t.Fatalf("a host socket for 127.0.0.0/8 did not connect to %s: %v", to, err)
	}
	c.Close()

	other := hostSocketsFor(t, []netip.Prefix{netip.MustParsePrefix("10.250.0.0/16"), netip.MustParsePrefix("192.0.2.0/24")}, 2)
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if c, err := dialFrom(ctx, other[0], to); err == nil {
		c.Close()
		t.Fatalf("a host socket for 10.250.0.0/16 and 192.0.2.0/24 connected to %s", to)
	}

	// Within the prefixes, an excluded address (the host's own on the
	// network, its gateway) is not reached either.
	gateway, err := NewHostSockets(loopback, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseFiles(gateway)
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if c, err := dialFrom(ctx, gateway[0], to); err == nil {
		c.Close()
		t.Fatalf("a host socket for 127.0.0.0/8 but 127.0.0.1 connected to %s", to)
	}
	b2 := startBackend(t, "127.0.0.2:0", "other")
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := dialFrom(ctx, gateway[1], netip.MustParseAddrPort(b2.ln.Addr().String())); err != nil {
		t.Fatalf("a host socket for 127.0.0.0/8 but 127.0.0.1 did not connect to %s: %v", b2.ln.Addr(), err)
	} else {
		c.Close()
	}

	fd := int(other[1].Fd())
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("taking the filter off: %v, want EPERM", err)
	}
	fprog := unix.SockFprog{Len: 1, Filter: &[]unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: ^uint32(0)}}[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); !errors.Is(err, unix.EPERM) {
		t.Fatalf("replacing the filter: %v, want EPERM", err)
	}
	// Made to listen on the host, it takes no client either.
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	d := net.Dialer{Timeout: 300 * time.Millisecond}
	if c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))); err == nil {
		c.Close()
		t.Fatal("a client on loopback connected to a host socket for 10.250.0.0/16 made to listen")
	}
}

// TestProxyDialsFromHostSockets: connections to a backend within the
// prefixes use the host sockets passed over the control socket, one each;
// once none is left the proxy dials on its own, and every client is
// served.
func TestProxyDialsFromHostSockets(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	sock := startControl(t, p)
	r := socketsReq(t, sock, Request{Op: OpSockets, Prefixes: []string{"127.0.0.0/8"}}, hostSocketsFor(t, loopback, 3)...)
	if r.Error != "" || r.Want != HostSocketsMax-3 {
		t.Fatalf("sockets: %+v, want %d wanted", r, HostSocketsMax-3)
	}
	if s := p.Stats(); s.HostSockets != 3 {
		t.Fatalf("the proxy holds %d host sockets, want 3", s.HostSockets)
	}
	clientsReachB1(t, p, 5)
	wantHostSockets(t, p, 0, 3)
}

// clientsReachB1 has n clients in turn reach the backend b1 through p.
func clientsReachB1(t *testing.T, p *Proxy, n int) {
	t.Helper()
	for range n {
		if got := greeting(t, listenAddr(p, 0)); got != "b1" {
			t.Fatalf("a client reached %q", got)
		}
	}
}

// wantHostSockets checks how many host sockets p holds, and how many
// connections it made from them.
func wantHostSockets(t *testing.T, p *Proxy, left int, dialed uint64) {
	t.Helper()
	if s := p.Stats(); s.HostSockets != left || s.HostConnections != dialed {
		t.Fatalf("%d host sockets left, %d connections from them; want %d and %d", s.HostSockets, s.HostConnections, left, dialed)
	}
}

// TestProxyKeepsHostSocketsForOtherPrefixes: a backend outside the
// prefixes is dialed from the proxy's own namespace, and the supply stays.
func TestProxyKeepsHostSocketsForOtherPrefixes(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	other := []netip.Prefix{netip.MustParsePrefix("10.250.0.0/16")}
	if _, err := p.Supply(context.Background(), other, hostSocketsFor(t, other, 2), 0); err != nil {
		t.Fatal(err)
	}
	clientsReachB1(t, p, 1)
	wantHostSockets(t, p, 2, 0)
}

// TestSupplyWaitsUntilHalfIsUsed: with a timeout, the reply comes once the
// supply fell under half, wanting what it lacks.
func TestSupplyWaitsUntilHalfIsUsed(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	got := make(chan int, 1)
	go func() {
		want, err := p.Supply(context.Background(), loopback, hostSocketsFor(t, loopback, HostSocketsMax/2), time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- want
	}()
	eventually(t, "the supply is taken", func() bool { return p.Stats().HostSockets == HostSocketsMax/2 })
	select {
	case w := <-got:
		t.Fatalf("the reply came with the supply at half: want %d", w)
	case <-time.After(100 * time.Millisecond):
	}
	greeting(t, listenAddr(p, 0))
	select {
	case w := <-got:
		if w != HostSocketsMax/2+1 {
			t.Fatalf("want %d, not %d", HostSocketsMax/2+1, w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reply after the supply fell under half")
	}
}

// TestSupplyRefusesOtherSockets: a listening, connected or blocking socket
// is refused, and nothing is kept.
func TestSupplyRefusesOtherSockets(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	sock := startControl(t, p)
	_, listening := hostListener(t)
	conn, err := net.Dial("tcp", b.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	connected, _ := conn.(*net.TCPConn).File()
	defer connected.Close()
	fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	blocking := os.NewFile(uintptr(fd), "blocking")
	defer blocking.Close()
	for name, f := range map[string]*os.File{"a listening socket": listening, "a connected socket": connected, "a blocking socket": blocking} {
		r := socketsReq(t, sock, Request{Op: OpSockets, Prefixes: []string{"127.0.0.0/8"}}, hostSocketsFor(t, loopback, 1)[0], f)
		if want := "sockets: socket 1: " + name; r.Error != want {
			t.Errorf("error %q, want %q", r.Error, want)
		}
	}
	for _, tc := range []struct{ req, want string }{
		{`{"op":"sockets"}`, "sockets: prefixes must list 1 to 16 IPv4 prefixes, not 0"},
		{`{"op":"sockets","prefixes":["172.18.0.1/16"]}`, `sockets: prefixes[0]: "172.18.0.1/16" is not an IPv4 prefix`},
		{`{"op":"sockets","prefixes":["fd00::/64"]}`, `sockets: prefixes[0]: "fd00::/64" is not an IPv4 prefix`},
		{`{"op":"sockets","prefixes":["10.0.0.0/8"],"backend":"a"}`, "sockets: takes no backend"},
		{`{"op":"stats","prefixes":["10.0.0.0/8"]}`, "stats: takes no prefixes"},
	} {
		if r := ctl(t, sock, []byte(tc.req)); !strings.Contains(r.Error, tc.want) {
			t.Errorf("request %s: error %q, want it to contain %q", tc.req, r.Error, tc.want)
		}
	}
	if s := p.Stats(); s.HostSockets != 0 {
		t.Fatalf("refused requests left %d host sockets", s.HostSockets)
	}
}

// TestHostSocketsRestWhereTheHostCannotReach: when a connection from a
// host socket does not complete (here the socket's filter drops the
// backend's answers, as a firewall between the host and the bridge would)
// the proxy's own connection serves the client, and host sockets rest
// instead of costing every client the wait.
func TestHostSocketsRestWhereTheHostCannotReach(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	var logs syncBuffer
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1", Log: slog.New(slog.NewTextHandler(&logs, nil))})
	blocked := hostSocketsFor(t, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, 3)
	if _, err := p.Supply(context.Background(), loopback, blocked, 0); err != nil {
		t.Fatal(err)
	}
	clientsReachB1(t, p, 3)
	wantHostSockets(t, p, 2, 0) // one tried, then a rest
	if !strings.Contains(logs.String(), "a connection from the host failed where the proxy's own succeeded") {
		t.Fatalf("the proxy did not say why host sockets rest:\n%s", logs.String())
	}
}
