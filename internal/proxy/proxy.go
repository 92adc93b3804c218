// Package proxy is the TCP proxy that owns the host ports of a rolling
// service. It runs as `dso-init proxy` in a small container of its own on the
// project network, so it outlives the agent: Docker publishes the service's
// host ports onto it and it forwards each port to the current backend
// container. The agent steers it over a unix socket in the container's tmpfs
// (see control.go), reached from the host or with `docker exec dso-init
// proxy-ctl` (internal/proxy/control); between two orders the proxy keeps
// its backends on its own. An agent on the host may instead bind the host
// ports and hand them over (adopt.go), and supply host sockets for the
// connections to the backends (hostsockets.go).
//
// Each port has its own listener and forwards only to its own target port,
// so a port's traffic never reaches another port. On Linux the bytes are
// moved by the proxy's event loops (pump_linux.go: read and write for small
// messages, splice(2) for large transfers), half-closes are passed on, and
// nothing of the traffic is ever logged.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of Options.
const (
	DefaultHoldTimeout = 60 * time.Second
	DefaultDialRetry   = 5 * time.Second
	DefaultGrace       = 5 * time.Second
)

// Port is one forwarded port: the proxy listens on Listen (all addresses of
// its network namespace, IPv4 and IPv6 when available, or Addr) and
// forwards to Target on the backend.
type Port struct {
	Listen int `json:"listen"`
	Target int `json:"target"`
	// Addr is the address of a listener the agent handed over (see Adopt):
	// a host address, such as 127.0.0.1 or ::; "" for the proxy's own.
	Addr string `json:"addr,omitempty"`
}

// Options configure a proxy.
type Options struct {
	// Ports to forward; Listen 0 lets the kernel pick a port (tests).
	Ports []Port
	// Backend is the host (IP or DNS name, such as the compose service name)
	// new connections go to until a Set.
	Backend string
	// HoldTimeout bounds how long a Hold keeps new connections waiting.
	HoldTimeout time.Duration
	// DialRetry bounds how long a new connection retries a backend that
	// does not answer, before the client is closed.
	DialRetry time.Duration
	// Grace is how long live connections may go on after Serve's context
	// ends, before they are closed.
	Grace time.Duration
	// Scheduling is the scheduling policy of the event loops that move the
	// bytes (see sched_linux.go): by default (SchedulingAuto) each loop
	// runs under SCHED_BATCH while it is busy, under the normal policy
	// otherwise. The first proxy of the process decides (the proxy
	// container runs one).
	Scheduling Scheduling
	// ListenHost is the address listeners bind ("" for all addresses).
	ListenHost string
	Log        *slog.Logger
}

// Scheduling is a scheduling policy of the proxy's event loops, named by
// the label dso.proxy.scheduling and dso-init proxy --scheduling. Under
// SCHED_BATCH a loop never preempts the task that woke it, most often the
// client or the backend writing a message, which can go on with the next
// ones first: more small requests a second where the proxy shares the CPUs
// with them; but where other work keeps every CPU busy, a message may wait
// for the scheduler's tick (BenchmarkProxy in test/bench measures both).
type Scheduling int

const (
	// SchedulingAuto runs each loop under SCHED_BATCH while it is busy,
	// unless its thread waits long to run, and under the normal policy
	// otherwise.
	SchedulingAuto Scheduling = iota
	// SchedulingNormal keeps the normal policy: a woken loop preempts.
	SchedulingNormal
	// SchedulingBatch runs the loops under SCHED_BATCH all the time.
	SchedulingBatch
)

var schedulingNames = [...]string{SchedulingAuto: "auto", SchedulingNormal: "normal", SchedulingBatch: "batch"}

func (s Scheduling) String() string { return schedulingNames[s] }

// ParseScheduling reads the name of a scheduling policy: auto, normal or
// batch.
func ParseScheduling(name string) (Scheduling, error) {
	if i := slices.Index(schedulingNames[:], name); i >= 0 {
		return Scheduling(i), nil
	}
	return 0, fmt.Errorf("%q: want auto, normal or batch", name)
}

// Proxy forwards the ports of one service to its current backends.
type Proxy struct {
	opts Options
	log  *slog.Logger

	lnMu      sync.Mutex
	ports     []*port
	serving   context.Context // Serve's while it accepts
	live      context.Context // the connections': ends when Serve closes those still open
	stopped   bool            // Serve stopped accepting
	accepters sync.WaitGroup

	mu         sync.Mutex
	backends   []string
	next       int
	hold       *hold
	names      *names
	host       *hostSockets
	switchedAt time.Time
	conns      map[*conn]struct{}
	draining   map[string]int // hosts being drained, by drains in progress
	wg         sync.WaitGroup // connection handlers
}

// port is one listener with its counters.
type port struct {
	Port
	ln           *net.TCPListener
	active       atomic.Int64
	accepted     atomic.Uint64
	toBackend    atomic.Uint64
	toClient     atomic.Uint64
	dialFailures atomic.Uint64
	dropped      atomic.Uint64
}

// hold is an ongoing Hold: new connections wait for release.
type hold struct {
	release  chan struct{} // closed by Set or at the deadline
	expired  bool          // set before release is closed at the deadline
	deadline time.Time
	timer    *time.Timer
	held     atomic.Int64
}

// Listen checks opts and binds every port; the proxy serves once Serve runs.
func Listen(opts Options) (*Proxy, error) {
	if len(opts.Ports) == 0 {
		return nil, errors.New("no port to forward")
	}
	if err := ValidHost(opts.Backend); err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	seen := map[int]bool{}
	for _, p := range opts.Ports {
		if p.Listen < 0 || p.Listen > 65535 || p.Target < 1 || p.Target > 65535 {
			return nil, fmt.Errorf("port %d:%d: ports must be within 1-65535", p.Listen, p.Target)
		}
		if p.Listen != 0 && seen[p.Listen] {
			return nil, fmt.Errorf("port %d is listed twice", p.Listen)
		}
		seen[p.Listen] = true
	}
	if opts.HoldTimeout <= 0 {
		opts.HoldTimeout = DefaultHoldTimeout
	}
	if opts.DialRetry <= 0 {
		opts.DialRetry = DefaultDialRetry
	}
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if err := startPump(opts.Scheduling, opts.Log); err != nil {
		return nil, err
	}
	p := &Proxy{
		opts:       opts,
		log:        opts.Log,
		backends:   []string{opts.Backend},
		names:      newNames(),
		host:       newHostSockets(),
		switchedAt: time.Now(),
		conns:      map[*conn]struct{}{},
		draining:   map[string]int{},
	}
	for _, pp := range opts.Ports {
		ln, err := net.Listen("tcp", net.JoinHostPort(opts.ListenHost, strconv.Itoa(pp.Listen)))
		if err != nil {
			p.closeListeners()
			return nil, fmt.Errorf("port %d: %w", pp.Listen, err)
		}
		pp.Listen = ln.Addr().(*net.TCPAddr).Port
		p.ports = append(p.ports, &port{Port: pp, ln: ln.(*net.TCPListener)})
	}
	return p, nil
}

// Ports returns the forwarded ports, with the listen ports the kernel picked.
func (p *Proxy) Ports() []Port { return portsOf(p.listeners()) }

func (p *Proxy) listeners() []*port {
	p.lnMu.Lock()
	defer p.lnMu.Unlock()
	return slices.Clone(p.ports)
}

func (p *Proxy) closeListeners() {
	for _, pp := range p.listeners() {
		pp.ln.Close()
	}
}

// Serve accepts and forwards connections until ctx ends; then it stops
// accepting, closes the connections still held, gives the live ones
// Options.Grace to end, closes the rest and returns. A connection accepted
// just before ctx ended, still dialing its backend, is served too: closing
// it would reset a client whose request was already sent.
func (p *Proxy) Serve(ctx context.Context) error {
	p.log.Info("proxy serving", "ports", p.Ports(), "backend", p.opts.Backend)
	connCtx, endConns := context.WithCancel(context.Background())
	defer endConns()
	p.lnMu.Lock()
	p.serving, p.live = ctx, connCtx
	for _, pp := range p.ports {
		p.accepters.Go(func() { p.accept(ctx, connCtx, pp) })
	}
	p.lnMu.Unlock()
	<-ctx.Done()
	p.lnMu.Lock()
	p.serving, p.stopped = nil, true
	p.lnMu.Unlock()
	p.closeListeners()
	p.accepters.Wait()
	p.host.close()

	p.mu.Lock()
	if h := p.hold; h != nil {
		p.endHold(h, true)
	}
	live := len(p.conns)
	p.mu.Unlock()
	p.log.Info("proxy stopping", "live_connections", live, "grace", p.opts.Grace)

	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(p.opts.Grace):
	}
	endConns()
	p.mu.Lock()
	closed := len(p.conns)
	for c := range p.conns {
		c.close()
	}
	p.mu.Unlock()
	<-done
	p.log.Info("proxy stopped", "closed_connections", closed)
	return nil
}

// accept takes pp's connections until ctx ends; each is handled under
// live.
func (p *Proxy) accept(ctx, live context.Context, pp *port) {
	var delay time.Duration
	for {
		c, err := pp.ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as
			// net/http does, instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", "port", pp.Listen, "error", err, "retry_in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		pp.accepted.Add(1)
		pp.active.Add(1)
		p.wg.Go(func() {
			defer pp.active.Add(-1)
			p.handle(live, pp, c)
		})
	}
}

// conn is one forwarded connection. It is registered from its accept on,
// so that a drain of the backend it is dialing waits for it too: a
// connection that picked the old container just before a switch, and
// reached it just after, is drained like the others, not cut when the old
// container stops.
type conn struct {
	client *net.TCPConn
	host   string        // the backend as set (an address or a name), "" while held; under Proxy.mu
	addr   string        // the address it reached, "" while dialing; under Proxy.mu
	done   chan struct{} // closed when both directions ended

	mu      sync.Mutex
	backend *net.TCPConn // nil while dialing
	stop    func()       // set once forwarding owns the sockets: ends it
	closed  bool
}

func (c *conn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	if c.stop != nil {
		c.stop()
		return
	}
	c.client.Close()
	if c.backend != nil {
		c.backend.Close()
	}
}

// attach gives c the backend it dialed; false (and the backend closed)
// when c was closed meanwhile.
func (c *conn) attach(backend *net.TCPConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		backend.Close()
		return false
	}
	c.backend = backend
	return true
}

func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// handle waits out a hold, dials a backend and copies both ways.
func (p *Proxy) handle(ctx context.Context, pp *port, client *net.TCPConn) {
	c := &conn{client: client, done: make(chan struct{})}
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	defer func() {
		c.close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		close(c.done)
	}()
	backend, ok := p.dial(ctx, pp, c)
	if !ok || !c.attach(backend) {
		return
	}
	if ra, ok := backend.RemoteAddr().(*net.TCPAddr); ok {
		p.mu.Lock()
		c.addr = ra.IP.String()
		p.mu.Unlock()
	}

	p.forward(c, pp)
}

// dialAttempt bounds one connection attempt to one address of a backend
// on the project network, where a live one answers within a millisecond:
// an address that went silent (its container stopped or removed, and the
// name's answer still held) costs a new connection this much at most
// before the next address, or a fresh lookup, is tried.
const dialAttempt = 250 * time.Millisecond

// dial finds a backend for a new connection: it waits while a hold lasts,
// then tries the backends round-robin, retrying with a short backoff for
// up to Options.DialRetry so that a backend still starting (or a switch
// under way) shows as a delay to the client, not a refusal.
func (p *Proxy) dial(ctx context.Context, pp *port, c *conn) (*net.TCPConn, bool) {
	var deadline time.Time
	wait := 20 * time.Millisecond
	var lastHost string
	var lastErr error
	for {
		host, h := p.pick(c)
		if h != nil {
			h.held.Add(1)
			select {
			case <-h.release:
			case <-ctx.Done():
			}
			h.held.Add(-1)
			if ctx.Err() != nil || h.expired {
				pp.dropped.Add(1)
				return nil, false
			}
			continue
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(p.opts.DialRetry)
		}
		dctx, cancel := context.WithDeadline(ctx, deadline)
		backend, err := p.dialHost(dctx, host, pp.Target)
		cancel()
		if err == nil {
			return backend.(*net.TCPConn), true
		}
		pp.dialFailures.Add(1)
		lastHost, lastErr = host, err
		if ctx.Err() != nil || c.isClosed() || time.Now().Add(wait).After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
	pp.dropped.Add(1)
	if ctx.Err() == nil && !c.isClosed() {
		p.log.Warn("no backend answered; client closed", "port", pp.Listen, "target", pp.Target,
			"backend", lastHost, "retried_for", p.opts.DialRetry, "error", dialReason(lastErr))
	}
	return nil, false
}

// dialHost connects to port on host, trying a name's addresses in turn
// (as net.Dialer does with the addresses of a lookup), each for
// dialAttempt at most: a backend that went away must not take the whole
// retry time, while a Set may have named another one meanwhile. A failed
// address makes the name looked up again by the next connection: its
// container may have gone.
func (p *Proxy) dialHost(ctx context.Context, host string, port int) (net.Conn, error) {
	addrs, err := p.names.addrs(ctx, host)
	if err != nil {
		return nil, err
	}
	for i, ip := range addrs {
		actx, cancel := context.WithTimeout(ctx, dialAttempt)
		var c net.Conn
		c, err = p.dialAddr(actx, ip, port)
		cancel()
		if err == nil {
			if i > 0 {
				p.names.forget(host)
			}
			return c, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	p.names.forget(host)
	return nil, err
}

// dialAddr connects to port on the address ip: from a host socket when
// there is one for it (see hostSockets), else from the proxy's own network
// namespace. A host's connection that neither completes within hostAttempt
// nor is refused (the backend answered) gives way to the proxy's own; when
// that one succeeds, the host does not reach what the proxy does (a
// firewall between the host and the bridge), and host sockets rest for
// hostPause.
func (p *Proxy) dialAddr(ctx context.Context, ip string, port int) (net.Conn, error) {
	var d net.Dialer
	a, err := netip.ParseAddr(ip)
	f := (*os.File)(nil)
	if err == nil {
		a = a.Unmap()
		f = p.host.take(a)
	}
	if f == nil {
		return d.DialContext(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	}
	hctx, cancel := context.WithTimeout(ctx, hostAttempt)
	c, herr := dialFrom(hctx, f, netip.AddrPortFrom(a, uint16(port)))
	cancel()
	if herr == nil {
		p.host.dialed.Add(1)
		return c, nil
	}
	if errors.Is(herr, syscall.ECONNREFUSED) || ctx.Err() != nil {
		return nil, herr
	}
	own, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err == nil && p.host.pause(hostPause) {
		p.log.Warn("a connection from the host failed where the proxy's own succeeded; connecting from the proxy's network for a while",
			"backend", ip, "port", port, "error", dialReason(herr), "for", hostPause)
	}
	return own, err
}

// hostAttempt bounds a connection from a host socket before the proxy's own
// is tried, and hostPause how long host sockets rest after the proxy's own
// connection succeeded where the host's failed.
const (
	hostAttempt = 100 * time.Millisecond
	hostPause   = time.Minute
)

// dialReason is the cause of a failed dial without the addresses, which the
// log line names apart.
func dialReason(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

// pick returns the next backend round-robin, which c now dials, or the
// hold to wait for.
func (p *Proxy) pick(c *conn) (string, *hold) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold != nil {
		c.host = ""
		return "", p.hold
	}
	c.host = p.backends[p.next%len(p.backends)]
	p.next++
	return c.host, nil
}
