package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// backend is a TCP server on loopback. By default each connection gets
// "NAME\n", then an echo of what it sends, and after the client's
// half-close "bye NAME\n" before the backend closes.
type backend struct {
	name string
	ln   *net.TCPListener
}

func (b *backend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

func startBackend(t *testing.T, addr, name string) *backend {
	t.Helper()
	return startBackendFunc(t, addr, name, func(c *net.TCPConn) {
		io.WriteString(c, name+"\n")
		io.Copy(c, c)
		io.WriteString(c, "bye "+name+"\n")
	})
}

func startBackendFunc(t *testing.T, addr, name string, serve func(*net.TCPConn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("backend %s: %v", name, err)
	}
	b := &backend{name: name, ln: ln.(*net.TCPListener)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[*net.TCPConn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := b.ln.AcceptTCP()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	return b
}

// startProxy runs a proxy on 127.0.0.1 until the test ends.
func startProxy(t *testing.T, opts Options) *Proxy {
	t.Helper()
	return startProxyWith(t, opts, func(*Proxy) {})
}

// startProxyWith is startProxy with setup run before the proxy serves.
func startProxyWith(t *testing.T, opts Options, setup func(*Proxy)) *Proxy {
	t.Helper()
	opts.ListenHost = "127.0.0.1"
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p, err := Listen(opts)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	setup(p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func listenAddr(p *Proxy, i int) string {
	return "127.0.0.1:" + strconv.Itoa(p.Ports()[i].Listen)
}

// client is one connection through the proxy.
type client struct {
	t *testing.T
	c *net.TCPConn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, c: c.(*net.TCPConn), r: bufio.NewReader(c)}
}

func (c *client) line() string {
	c.t.Helper()
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimSuffix(s, "\n")
}

// echo sends a line and checks it comes back.
func (c *client) echo(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s+"\n"); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	if got := c.line(); got != s {
		c.t.Fatalf("echo: got %q, want %q", got, s)
	}
}

// greeting connects and returns the name of the backend that answered.
func greeting(t *testing.T, addr string) string {
	t.Helper()
	c := dial(t, addr)
	defer c.c.Close()
	return c.line()
}

// unusedPort returns a port on 127.0.0.1 nothing listens on.
func unusedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEachPortGoesOnlyToItsTarget(t *testing.T) {
	web := startBackend(t, "127.0.0.1:0", "web")
	admin := startBackend(t, "127.0.0.1:0", "admin")
	p := startProxy(t, Options{
		Ports:   []Port{{Target: web.port()}, {Target: admin.port()}},
		Backend: "127.0.0.1",
	})
	for range 20 {
		if got := greeting(t, listenAddr(p, 0)); got != "web" {
			t.Fatalf("first port reached %q, want web", got)
		}
		if got := greeting(t, listenAddr(p, 1)); got != "admin" {
			t.Fatalf("second port reached %q, want admin", got)
		}
	}
	s := p.Stats()
	if s.Ports[0].Accepted != 20 || s.Ports[1].Accepted != 20 {
		t.Errorf("accepted per port = %d, %d; want 20, 20", s.Ports[0].Accepted, s.Ports[1].Accepted)
	}
}

func TestClientHalfCloseStillGetsTheAnswer(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	c := dial(t, listenAddr(p, 0))
	io.WriteString(c.c, "question\n")
	if err := c.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(c.r)
	if err != nil {
		t.Fatalf("read after half-close: %v", err)
	}
	want := "b1\nquestion\nbye b1\n"
	if string(rest) != want {
		t.Fatalf("got %q, want %q", rest, want)
	}
	eventually(t, "byte counters", func() bool {
		s := p.Stats().Ports[0]
		return s.BytesToBackend == uint64(len("question\n")) && s.BytesToClient == uint64(len(want)) && s.Active == 0
	})
}

// TestWhatTheClientSentBeforeTheDialArrivesWhole: a client that sends at
// once, more than the first move before the hand-over to a loop takes,
// then half-closes, has every byte reach the backend in order.
func TestWhatTheClientSentBeforeTheDialArrivesWhole(t *testing.T) {
	b := startBackendFunc(t, "127.0.0.1:0", "sum", func(c *net.TCPConn) {
		h := sha256.New()
		n, _ := io.Copy(h, c)
		fmt.Fprintf(c, "%d %x\n", n, h.Sum(nil))
	})
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	for _, size := range []int{100, 2 << 10, 300 << 10} {
		data := bytes.Repeat([]byte("0123456789abcdefg"), size/17+1)[:size]
		c := dial(t, listenAddr(p, 0))
		if _, err := c.c.Write(data); err != nil {
			t.Fatal(err)
		}
		c.c.CloseWrite()
		sum := sha256.Sum256(data)
		if got, want := c.line(), fmt.Sprintf("%d %x", size, sum); got != want {
			t.Fatalf("the backend got %q, want %q", got, want)
		}
	}
}

func TestBackendHalfCloseStillGetsTheRequest(t *testing.T) {
	got := make(chan string, 1)
	b := startBackendFunc(t, "127.0.0.1:0", "b1", func(c *net.TCPConn) {
		io.WriteString(c, "answer first\n")
		c.CloseWrite()
		data, _ := io.ReadAll(c)
		got <- string(data)
	})
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	c := dial(t, listenAddr(p, 0))
	data, err := io.ReadAll(c.r)
	if err != nil || string(data) != "answer first\n" {
		t.Fatalf("read until the backend's half-close: %q, %v", data, err)
	}
	if _, err := io.WriteString(c.c, "late request\n"); err != nil {
		t.Fatalf("write after the backend's half-close: %v", err)
	}
	c.c.CloseWrite()
	select {
	case s := <-got:
		if s != "late request\n" {
			t.Fatalf("backend got %q", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("backend never got the request")
	}
}

// TestBulkWithASlowReaderKeepsEveryByte sends more than the kernel's
// buffers and the proxy's pipes hold, both ways at once, to a reader that
// starts late and reads in small steps: the proxy must hold back and
// resume without losing, duplicating or reordering a byte.
func TestBulkWithASlowReaderKeepsEveryByte(t *testing.T) {
	const size = 48 << 20
	pattern := func(i int) byte { return byte(i*7 + i>>13) }
	fill := func(w io.Writer) error {
		buf := make([]byte, 1<<16)
		for off := 0; off < size; off += len(buf) {
			for i := range buf {
				buf[i] = pattern(off + i)
			}
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}
	check := func(r io.Reader) error {
		time.Sleep(300 * time.Millisecond) // let every buffer on the way fill up
		buf := make([]byte, 1000)
		n := 0
		for {
			k, err := r.Read(buf)
			for i := range k {
				if buf[i] != pattern(n+i) {
					return fmt.Errorf("byte %d differs", n+i)
				}
			}
			n += k
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("after %d bytes: %w", n, err)
			}
		}
		if n != size {
			return fmt.Errorf("got %d bytes, want %d", n, size)
		}
		return nil
	}
	backendErr := make(chan error, 2)
	b := startBackendFunc(t, "127.0.0.1:0", "b1", func(c *net.TCPConn) {
		var wg sync.WaitGroup
		wg.Go(func() {
			backendErr <- fill(c)
			c.CloseWrite()
		})
		backendErr <- check(c)
		wg.Wait()
	})
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	c := dial(t, listenAddr(p, 0))
	c.c.SetDeadline(time.Now().Add(time.Minute))
	var wg sync.WaitGroup
	var fillErr error
	wg.Go(func() {
		fillErr = fill(c.c)
		c.c.CloseWrite()
	})
	if err := check(c.r); err != nil {
		t.Fatalf("client: %v", err)
	}
	wg.Wait()
	if fillErr != nil {
		t.Fatalf("client sending: %v", fillErr)
	}
	for range 2 {
		if err := <-backendErr; err != nil {
			t.Fatalf("backend: %v", err)
		}
	}
	eventually(t, "byte counters", func() bool {
		s := p.Stats().Ports[0]
		return s.BytesToBackend == size && s.BytesToClient == size && s.Active == 0
	})
}

// twoBackends starts "old" on 127.0.0.1 and "new" on 127.0.0.2, same port.
func twoBackends(t *testing.T) (port int) {
	t.Helper()
	old := startBackend(t, "127.0.0.1:0", "old")
	startBackend(t, "127.0.0.2:"+strconv.Itoa(old.port()), "new")
	return old.port()
}

func TestSetMovesNewConnectionsOnly(t *testing.T) {
	port := twoBackends(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1"})
	long := dial(t, listenAddr(p, 0))
	if got := long.line(); got != "old" {
		t.Fatalf("first connection reached %q", got)
	}
	before := time.Now()
	at, err := p.Set([]string{"127.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	if at.Before(before) {
		t.Errorf("switch time %v is before the Set call %v", at, before)
	}
	for range 10 {
		if got := greeting(t, listenAddr(p, 0)); got != "new" {
			t.Fatalf("new connection after Set reached %q", got)
		}
	}
	long.echo("still here")
	s := p.Stats()
	if s.Connections["127.0.0.1"] != 1 || !s.SwitchedAt.Equal(at) || len(s.Backends) != 1 || s.Backends[0] != "127.0.0.2" {
		t.Errorf("stats after Set: %+v", s)
	}
}

func TestSetRoundRobin(t *testing.T) {
	port := twoBackends(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1"})
	if _, err := p.Set([]string{"127.0.0.1", "127.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range 10 {
		seen[greeting(t, listenAddr(p, 0))]++
	}
	if seen["old"] != 5 || seen["new"] != 5 {
		t.Fatalf("10 connections over two backends went %v", seen)
	}
}

func TestHoldThenSetServesEveryHeldClient(t *testing.T) {
	port := twoBackends(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1"})
	p.Hold(time.Minute)
	const n = 20
	names := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c, err := net.Dial("tcp", listenAddr(p, 0))
			if err != nil {
				names <- "refused: " + err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			s, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				s = "error: " + err.Error()
			}
			names <- strings.TrimSpace(s)
		})
	}
	eventually(t, "all clients held", func() bool { s := p.Stats(); return s.Holding && s.Held == n })
	if _, err := p.Set([]string{"127.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(names)
	for name := range names {
		if name != "new" {
			t.Errorf("held client got %q, want the new backend", name)
		}
	}
	if s := p.Stats(); s.Holding || s.Held != 0 || s.Ports[0].Dropped != 0 {
		t.Errorf("stats after Set: %+v", s)
	}
}

func TestHoldTimesOut(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	p.Hold(100 * time.Millisecond)
	c := dial(t, listenAddr(p, 0))
	data, err := io.ReadAll(c.r)
	if err != nil || len(data) != 0 {
		t.Fatalf("held client after the hold timeout: read %q, %v; want a close", data, err)
	}
	if s := p.Stats(); s.Holding || s.Ports[0].Dropped != 1 {
		t.Errorf("stats after the hold timeout: %+v", s)
	}
	if got := greeting(t, listenAddr(p, 0)); got != "b1" {
		t.Fatalf("after the hold ended, a new connection reached %q", got)
	}
}

func TestHoldDuringAHoldRestartsItsTimeout(t *testing.T) {
	port := twoBackends(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1"})
	p.Hold(50 * time.Millisecond)
	p.Hold(time.Minute)
	c := dial(t, listenAddr(p, 0))
	eventually(t, "the client held", func() bool { return p.Stats().Held == 1 })
	time.Sleep(100 * time.Millisecond) // past the first timeout
	if _, err := p.Set([]string{"127.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	if got := c.line(); got != "new" {
		t.Fatalf("held client got %q, want the new backend", got)
	}
}

func TestDrain(t *testing.T) {
	port := twoBackends(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1"})
	var conns []*client
	for range 3 {
		c := dial(t, listenAddr(p, 0))
		c.line()
		conns = append(conns, c)
	}
	if _, err := p.Drain(t.Context(), "127.0.0.1", time.Second); err == nil || !strings.Contains(err.Error(), "still takes new connections") {
		t.Fatalf("drain of the current backend: %v", err)
	}
	if _, err := p.Set([]string{"127.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		r   DrainResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := p.Drain(t.Context(), "127.0.0.1", 2*time.Second)
		done <- result{r, err}
	}()
	eventually(t, "the drain to start", func() bool { return len(p.Stats().Draining) == 1 })
	// Two clients finish by themselves; the third stays.
	for _, c := range conns[:2] {
		c.c.CloseWrite()
		io.ReadAll(c.r)
	}
	res := <-done
	if res.err != nil || res.r != (DrainResult{Drained: 2, Closed: 1}) {
		t.Fatalf("drain = %+v, %v; want 2 drained, 1 closed", res.r, res.err)
	}
	if _, err := io.ReadAll(conns[2].r); err != nil {
		t.Fatalf("the connection left after the drain: %v; want it closed", err)
	}
	if s := p.Stats(); s.Connections["127.0.0.1"] != 0 || len(s.Draining) != 0 {
		t.Fatalf("after the drain: %+v", s)
	}
}

// TestDrainLeavesLaterConnections: a drain closes at its bound only the
// connections that had picked a backend when it started; one held then, or
// made after the drained backend was set again (an agent's recovery undoing
// the rotation while the drain, which outlives the agent that asked for
// it, goes on), stays open.
func TestDrainLeavesLaterConnections(t *testing.T) {
	port := twoBackends(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1"})
	before := dial(t, listenAddr(p, 0))
	before.line()
	p.Hold(time.Minute)
	held := dial(t, listenAddr(p, 0))
	eventually(t, "the connection to be held", func() bool { return p.Stats().Held == 1 })
	done := make(chan DrainResult, 1)
	go func() {
		r, err := p.Drain(t.Context(), "127.0.0.1", time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	eventually(t, "the drain to start", func() bool { return len(p.Stats().Draining) == 1 })
	if _, err := p.Set([]string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	after := dial(t, listenAddr(p, 0))
	for _, c := range []*client{held, after} {
		if got := c.line(); got != "old" {
			t.Fatalf("a connection released or made after the recovery reached %q", got)
		}
	}
	if r := <-done; r != (DrainResult{Closed: 1}) {
		t.Fatalf("drain = %+v; want the earlier connection closed, no other", r)
	}
	if _, err := io.ReadAll(before.r); err != nil {
		t.Fatalf("the earlier connection after the drain: %v; want it closed", err)
	}
	for _, c := range []*client{held, after} {
		c.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.r.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a connection released or made after the recovery, after the drain: read %d, %v; want it open", n, err)
		}
	}
}

// TestDrainByAddressTakesNamedConnections: connections dialed through a
// name (the service's, in a compose project) are drained by the address
// they reached (the old container's).
func TestDrainByAddressTakesNamedConnections(t *testing.T) {
	port := twoBackends(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "localhost"})
	c := dial(t, listenAddr(p, 0))
	if got := c.line(); got != "old" {
		t.Fatalf("through localhost the client reached %q", got)
	}
	if _, err := p.Set([]string{"127.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	res, err := p.Drain(t.Context(), "127.0.0.1", 200*time.Millisecond)
	if err != nil || res != (DrainResult{Closed: 1}) {
		t.Fatalf("drain = %+v, %v; want the named connection closed", res, err)
	}
	if _, err := io.ReadAll(c.r); err != nil {
		t.Fatalf("the connection left after the drain: %v; want it closed", err)
	}
}

func TestProbeNamesThePortThatFails(t *testing.T) {
	up := startBackend(t, "127.0.0.1:0", "up")
	down := unusedPort(t)
	p := startProxy(t, Options{Ports: []Port{{Target: up.port()}, {Target: down}}, Backend: "127.0.0.1"})
	err := p.Probe(t.Context(), "127.0.0.1", 300*time.Millisecond)
	want := "port " + strconv.Itoa(p.Ports()[1].Listen) + ": 127.0.0.1:" + strconv.Itoa(down) + " does not answer"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("probe = %v; want an error containing %q", err, want)
	}
	startBackend(t, "127.0.0.1:"+strconv.Itoa(down), "late")
	if err := p.Probe(t.Context(), "127.0.0.1", 5*time.Second); err != nil {
		t.Fatalf("probe with both ports up: %v", err)
	}
}

// TestProbeWaitsForABackendStillStarting: a port that refuses at first
// and listens a moment later passes one probe.
func TestProbeWaitsForABackendStillStarting(t *testing.T) {
	port := unusedPort(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1"})
	probed := make(chan error, 1)
	go func() { probed <- p.Probe(t.Context(), "127.0.0.1", time.Minute) }()
	time.Sleep(100 * time.Millisecond) // the probe has been refused
	select {
	case err := <-probed:
		t.Fatalf("probe ended before the backend listened: %v", err)
	default:
	}
	startBackend(t, "127.0.0.1:"+strconv.Itoa(port), "late")
	if err := <-probed; err != nil {
		t.Fatalf("probe of a backend that started late: %v", err)
	}
}

func TestDialRetriesABackendThatStartsLate(t *testing.T) {
	port := unusedPort(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1", DialRetry: 20 * time.Second})
	c := dial(t, listenAddr(p, 0))
	eventually(t, "a failed dial", func() bool { return p.Stats().Ports[0].DialFailures > 0 })
	startBackend(t, "127.0.0.1:"+strconv.Itoa(port), "late")
	if got := c.line(); got != "late" {
		t.Fatalf("got %q", got)
	}
	if s := p.Stats().Ports[0]; s.Dropped != 0 {
		t.Fatalf("dropped = %d", s.Dropped)
	}
}

func TestDialGivesUpAfterRetrying(t *testing.T) {
	port := unusedPort(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1", DialRetry: 200 * time.Millisecond})
	c := dial(t, listenAddr(p, 0))
	if data, err := io.ReadAll(c.r); err != nil || len(data) != 0 {
		t.Fatalf("read %q, %v; want a close", data, err)
	}
	if s := p.Stats().Ports[0]; s.Dropped != 1 || s.DialFailures < 2 {
		t.Fatalf("stats: %+v; want 1 dropped after several dial failures", s)
	}
}

// ctl sends raw bytes to the control socket and decodes the reply.
func ctl(t *testing.T, sock string, req []byte) Reply {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(req)
	c.CloseWrite()
	var r Reply
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		t.Fatalf("reply: %v", err)
	}
	return r
}

func startControl(t *testing.T, p *Proxy) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	ln, err := ListenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.ServeControl(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

func TestControlRefusesBadRequestsAndChangesNothing(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	sock := startControl(t, p)
	before := p.Stats()
	for _, tc := range []struct{ req, want string }{
		{`{"op":"set","backends":[`, "malformed request: not valid JSON"},
		{``, "malformed request: empty"},
		{`{"op":"set"}{"op":"hold"}`, "more than one JSON value"},
		{`{"op":"reboot"}`, `unknown op "reboot"`},
		{`{"op":"set","backends":["ok","bad host"]}`, `set: backends[1]: "bad host" is not an IP address or a DNS name`},
		{`{"op":"set","backends":[]}`, "set: backends must list 1 to 64 hosts"},
		{`{"op":"set","backends":["a"],"colour":"red"}`, `malformed request: unknown field "colour"`},
		{`{"op":"set","backends":"a"}`, `field "backends" has the wrong type`},
		{`{"op":"drain","backend":"127.0.0.1","timeout":"2h"}`, "drain: timeout must be more than 0 and at most 1h0m0s"},
		{`{"op":"drain","backend":"127.0.0.1"}`, "drain: timeout must be more than 0"},
		{`{"op":"probe","backend":"-x","timeout":"1s"}`, `probe: backend: "-x" is not an IP address`},
		{`{"op":"hold","timeout":"soon"}`, `malformed request: timeout is not a duration such as 30s`},
		{`{"op":"stats","backend":"a"}`, "stats: takes no backend"},
		{`{"op":"set","backends":["` + strings.Repeat("a", MaxRequest) + `"]}`, "request larger than 16384 bytes"},
	} {
		r := ctl(t, sock, []byte(tc.req))
		if !strings.Contains(r.Error, tc.want) {
			short := tc.req
			if len(short) > 60 {
				short = short[:60] + "..."
			}
			t.Errorf("request %s: error %q, want it to contain %q", short, r.Error, tc.want)
		}
	}
	after := p.Stats()
	if after.Holding || !after.SwitchedAt.Equal(before.SwitchedAt) || len(after.Backends) != 1 || after.Backends[0] != "127.0.0.1" {
		t.Fatalf("bad requests changed the proxy: before %+v, after %+v", before, after)
	}
	if got := greeting(t, listenAddr(p, 0)); got != "b1" {
		t.Fatalf("after bad requests a connection reached %q", got)
	}
}

// A client that never ends its request gets an error once requestTimeout
// has passed, and the proxy goes on: a read cut by its deadline took the
// proxy down (a slice bound of -1).
func TestControlClientThatNeverEndsItsRequest(t *testing.T) {
	saved := requestTimeout
	t.Cleanup(func() { requestTimeout = saved }) // after the control socket's
	requestTimeout = 100 * time.Millisecond
	b := startBackend(t, "127.0.0.1:0", "b1")
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	sock := startControl(t, p)
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, `{"op":"stats"`)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	out, err := io.ReadAll(c)
	var r Reply
	if err != nil || json.Unmarshal(out, &r) != nil || !strings.Contains(r.Error, "reading the request") {
		t.Fatalf("reply %q, %v; want an error reading the request", out, err)
	}
	if r := ctl(t, sock, []byte(`{"op":"stats"}`)); r.Error != "" || r.Stats == nil {
		t.Fatalf("the next request: %+v", r)
	}
	if got := greeting(t, listenAddr(p, 0)); got != "b1" {
		t.Fatalf("a connection reached %q", got)
	}
}

// An exchange whose reply never comes ends with an error when the
// connection is closed under it, as the agent does when its context ends.
func TestExchangeCutWhileWaitingForTheReply(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "silent.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, func() { c.Close() })
	if _, _, err := Exchange(c, []byte(`{"op":"stats"}`)); err == nil {
		t.Fatal("no error")
	}
}

func TestCtlRoundTrip(t *testing.T) {
	port := twoBackends(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1"})
	sock := startControl(t, p)
	req, _ := json.Marshal(Request{Op: OpSet, Backends: []string{"127.0.0.2"}})
	out, err := Ctl(bytes.NewReader(req), sock)
	if err != nil {
		t.Fatal(err)
	}
	var r Reply
	if err := json.Unmarshal(out, &r); err != nil || r.SwitchedAt.IsZero() {
		t.Fatalf("set reply %s: %v", out, err)
	}
	if got := greeting(t, listenAddr(p, 0)); got != "new" {
		t.Fatalf("after set over the socket a connection reached %q", got)
	}
	req, _ = json.Marshal(Request{Op: OpDrain, Backend: "127.0.0.2", Timeout: Duration(time.Second)})
	if _, err := Ctl(bytes.NewReader(req), sock); err == nil || !strings.Contains(err.Error(), "still takes new connections") {
		t.Fatalf("Ctl of a refused drain: %v", err)
	}
	if _, err := Ctl(strings.NewReader(`{"op":"stats"}`), filepath.Join(t.TempDir(), "none.sock")); err == nil || !strings.Contains(err.Error(), "not listening") {
		t.Fatalf("Ctl without a proxy: %v", err)
	}
}

// TestCtlSessionAnswersEachLine: a session answers each request line with
// one reply line, a refused request with an error line, and goes on.
func TestCtlSessionAnswersEachLine(t *testing.T) {
	port := twoBackends(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1"})
	sock := startControl(t, p)
	in := strings.Join([]string{
		`{"op":"set","backends":["127.0.0.2"]}`,
		`{"op":"drain","backend":"127.0.0.2","timeout":"1s"}`,
		`{"op":"reboot"}`,
		`{"op":"stats"}`,
	}, "\n") + "\n"
	var out bytes.Buffer
	if err := CtlSession(strings.NewReader(in), &out, sock); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d reply lines, want 4:\n%s", len(lines), out.String())
	}
	replies := make([]Reply, len(lines))
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &replies[i]); err != nil {
			t.Fatalf("reply %d %q: %v", i+1, l, err)
		}
	}
	if replies[0].SwitchedAt.IsZero() || replies[0].Error != "" {
		t.Errorf("set: %+v", replies[0])
	}
	if !strings.Contains(replies[1].Error, "still takes new connections") {
		t.Errorf("refused drain: %+v", replies[1])
	}
	if !strings.Contains(replies[2].Error, `unknown op "reboot"`) {
		t.Errorf("unknown op: %+v", replies[2])
	}
	if replies[3].Stats == nil || len(replies[3].Stats.Backends) != 1 || replies[3].Stats.Backends[0] != "127.0.0.2" {
		t.Errorf("stats after the set: %+v", replies[3])
	}
	if got := greeting(t, listenAddr(p, 0)); got != "new" {
		t.Fatalf("after a set through the session a connection reached %q", got)
	}
}

func TestTrafficIsNeverLogged(t *testing.T) {
	const canary = "dso-canary-traffic-5f1e0c"
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	port := twoBackends(t)
	gone := unusedPort(t)
	p := startProxy(t, Options{Ports: []Port{{Target: port}, {Target: gone}}, Backend: "127.0.0.1", DialRetry: 100 * time.Millisecond, Log: log})
	sock := startControl(t, p)

	c := dial(t, listenAddr(p, 0))
	c.line()
	c.echo(canary)
	dead := dial(t, listenAddr(p, 1)) // no backend: logged as a dial failure
	io.WriteString(dead.c, canary)
	io.ReadAll(dead.r)
	ctl(t, sock, []byte(`{"op":"set","backends":["127.0.0.2"]}`))
	ctl(t, sock, []byte(`{"op":"hold","timeout":"`+canary+`"}`))
	c.echo(canary)
	c.c.CloseWrite()
	io.ReadAll(c.r)
	ctl(t, sock, []byte(`{"op":"drain","backend":"127.0.0.1","timeout":"1s"}`))

	out := logs.String()
	if !strings.Contains(out, "backend drained") || !strings.Contains(out, "no backend answered") {
		t.Fatalf("the log misses the expected lines:\n%s", out)
	}
	if strings.Contains(out, canary) {
		t.Fatalf("traffic or request content reached the log:\n%s", out)
	}
}

func TestServeStopsGracefully(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	p, err := Listen(Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1", ListenHost: "127.0.0.1", Grace: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	addr := listenAddr(p, 0)
	c := dial(t, addr)
	c.line()
	cancel()
	c.echo("during the grace")
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := io.ReadAll(c.r); err != nil {
		t.Fatalf("after the grace: %v; want the connection closed", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("the stopped proxy still accepts connections")
	}
}

// A connection accepted before the stop and still dialing its backend is
// served within the grace, not closed: its client already sent a request,
// and closing it would reset the client (seen under docker restart of a
// proxy under load).
func TestServeStopServesAConnectionStillDialing(t *testing.T) {
	port := unusedPort(t)
	p, err := Listen(Options{Ports: []Port{{Target: port}}, Backend: "127.0.0.1", ListenHost: "127.0.0.1",
		DialRetry: 20 * time.Second, Grace: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	c := dial(t, listenAddr(p, 0))
	eventually(t, "a failed dial", func() bool { return p.Stats().Ports[0].DialFailures > 0 })
	cancel()
	startBackend(t, "127.0.0.1:"+strconv.Itoa(port), "late")
	if got := c.line(); got != "late" {
		t.Fatalf("got %q", got)
	}
	c.c.CloseWrite()
	if got := c.line(); got != "bye late" {
		t.Fatalf("got %q", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if s := p.Stats().Ports[0]; s.Dropped != 0 {
		t.Fatalf("dropped = %d", s.Dropped)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
