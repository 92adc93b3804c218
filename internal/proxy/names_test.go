package proxy

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeResolver answers each lookup with the next of answers (the last one
// again when they run out) and counts them.
type fakeResolver struct {
	answers [][]netip.Addr
	lookups atomic.Int32
}

func (f *fakeResolver) use(p *Proxy) {
	p.names.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		n := int(f.lookups.Add(1))
		return f.answers[min(n, len(f.answers))-1], nil
	}
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// A backend name is looked up once per nameTTL, not per connection, and
// new connections go round-robin over its addresses (the replicas).
func TestNameIsLookedUpOnceAndSpreadOverItsAddresses(t *testing.T) {
	port := twoBackends(t)
	r := &fakeResolver{answers: [][]netip.Addr{addrs("127.0.0.1", "127.0.0.2")}}
	p := startProxyWith(t, Options{Ports: []Port{{Target: port}}, Backend: "svc"}, r.use)
	got := map[string]int{}
	for range 10 {
		got[greeting(t, listenAddr(p, 0))]++
	}
	if got["old"] != 5 || got["new"] != 5 {
		t.Fatalf("connections reached %v, want 5 each", got)
	}
	if n := r.lookups.Load(); n != 1 {
		t.Fatalf("%d lookups for 10 connections within %v, want 1", n, nameTTL)
	}
	time.Sleep(nameTTL + 50*time.Millisecond)
	greeting(t, listenAddr(p, 0))
	if n := r.lookups.Load(); n != 2 {
		t.Fatalf("%d lookups after the answer expired, want 2", n)
	}
}

// A Set, even of the same name, and a dial that failed make the next
// connection look the name up again: the agent's changes take effect at
// once, and a removed container's address is not dialed again.
func TestSetAndAFailedDialForgetTheAnswer(t *testing.T) {
	port := twoBackends(t)
	r := &fakeResolver{answers: [][]netip.Addr{addrs("127.0.0.1"), addrs("127.0.0.2"), addrs("127.0.0.3"), addrs("127.0.0.1")}}
	p := startProxyWith(t, Options{Ports: []Port{{Target: port}}, Backend: "svc", DialRetry: 20 * time.Second}, r.use)
	if got := greeting(t, listenAddr(p, 0)); got != "old" {
		t.Fatalf("first connection reached %q", got)
	}
	if _, err := p.Set([]string{"svc"}); err != nil {
		t.Fatal(err)
	}
	if got := greeting(t, listenAddr(p, 0)); got != "new" {
		t.Fatalf("after a Set a connection reached %q, want the new answer's", got)
	}
	if _, err := p.Set([]string{"svc"}); err != nil {
		t.Fatal(err)
	}
	// 127.0.0.3 serves nothing on the port: the dial fails, the answer is
	// forgotten, the retry looks up again and reaches 127.0.0.1.
	if got := greeting(t, listenAddr(p, 0)); got != "old" {
		t.Fatalf("after a failed dial a connection reached %q", got)
	}
	if n, f := r.lookups.Load(), p.Stats().Ports[0].DialFailures; n != 4 || f != 1 {
		t.Fatalf("%d lookups and %d failed dials, want 4 and 1", n, f)
	}
}

// A connection tries the name's other addresses when one fails, within the
// same attempt, as a dial of the name did, and the next connection looks
// the name up again.
func TestDialTriesTheNamesOtherAddresses(t *testing.T) {
	port := twoBackends(t)
	r := &fakeResolver{answers: [][]netip.Addr{addrs("127.0.0.3", "127.0.0.1"), addrs("127.0.0.2")}}
	p := startProxyWith(t, Options{Ports: []Port{{Target: port}}, Backend: "svc"}, r.use)
	if got := greeting(t, listenAddr(p, 0)); got != "old" {
		t.Fatalf("first connection reached %q", got)
	}
	if f := p.Stats().Ports[0].DialFailures; f != 0 {
		t.Fatalf("%d failed dials, want none: the second address answered", f)
	}
	if got := greeting(t, listenAddr(p, 0)); got != "new" {
		t.Fatalf("second connection reached %q, want the next lookup's", got)
	}
}

// silentListener listens on addr:port with a full accept queue, so that a
// new connection's SYN goes unanswered, as to a container that went away.
func silentListener(t *testing.T, addr string, port int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	sa := &unix.SockaddrInet4{Port: port, Addr: netip.MustParseAddr(addr).As4()}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	target := net.JoinHostPort(addr, strconv.Itoa(port))
	for range 8 {
		c, err := net.DialTimeout("tcp", target, 200*time.Millisecond)
		if err != nil {
			return // the queue is full: this connection's SYN went unanswered
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%s never stopped answering", target)
}

// An address that does not answer costs a connection dialAttempt, not the
// whole retry time: it goes on to the name's next address within the same
// attempt (with no bound per address, the dial of the silent one would
// last until the retry time ends and count as a failed dial).
func TestSilentAddressGivesWayToTheNext(t *testing.T) {
	port := twoBackends(t)
	silentListener(t, "127.0.0.4", port)
	r := &fakeResolver{answers: [][]netip.Addr{addrs("127.0.0.4", "127.0.0.1")}}
	p := startProxyWith(t, Options{Ports: []Port{{Target: port}}, Backend: "svc", DialRetry: 20 * time.Second}, r.use)
	if got := greeting(t, listenAddr(p, 0)); got != "old" {
		t.Fatalf("connection reached %q", got)
	}
	if f := p.Stats().Ports[0].DialFailures; f != 0 {
		t.Fatalf("%d failed dials, want none: the silent address gave way to the next", f)
	}
}
