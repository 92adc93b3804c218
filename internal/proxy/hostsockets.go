package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Host sockets. A proxy stands in its container on the project network, so
// its own connections to a backend cross the bridge from one container to
// another, which costs CPU on both ends (with Docker's br_netfilter, each
// packet passes the firewall twice); HAProxy or docker-proxy on the host
// take one hop. An agent that bound the proxy's host ports also passes it
// unconnected TCP sockets made in the host's network namespace (OpSockets),
// with the prefixes of the project networks the host reaches: a new
// connection to a backend address within them connects from one of those,
// so that the whole connection stays in the host's network stack, as
// HAProxy's would. The backend then sees the network's gateway as the
// client's address, as it does behind Docker's own published ports.
//
// Each socket carries a socket filter the agent locked on it, which drops
// every packet from outside the prefixes or from the host's own addresses
// on those networks (NewHostSockets): the proxy cannot reach the host's own
// services or listen on the host with them. When none is left, or the
// agent is gone, the proxy connects from its own network namespace, as
// before: a connection never waits for the agent. Where the host cannot
// reach a backend the proxy reaches (a firewall between them), host
// sockets give way to the proxy's own (Proxy.dialAddr).

// Bounds of the host sockets a proxy holds.
const (
	// HostSocketsMax is the most a proxy keeps; the agent tops the supply
	// up when it falls under half.
	HostSocketsMax = 128
	// MaxPrefixes bounds the prefixes of one OpSockets request.
	MaxPrefixes = 16
)

// hostSockets is a proxy's supply of host sockets.
type hostSockets struct {
	mu       sync.Mutex
	prefixes []netip.Prefix
	spare    []*os.File
	taken    chan struct{} // closed, and replaced, when a socket is taken
	resting  time.Time     // no socket is taken until then (see Proxy.dialAddr)
	dialed   atomic.Uint64 // connections made from host sockets
}

func newHostSockets() *hostSockets { return &hostSockets{taken: make(chan struct{})} }

// add keeps files (up to HostSocketsMax in all; the rest are closed) for
// connections to prefixes, which replace those given before.
func (h *hostSockets) add(prefixes []netip.Prefix, files []*os.File) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.prefixes = prefixes
	for _, f := range files {
		if len(h.spare) < HostSocketsMax {
			h.spare = append(h.spare, f)
		} else {
			f.Close()
		}
	}
}

// want returns how many sockets the supply lacks, after waiting up to
// timeout for it to fall under half.
func (h *hostSockets) want(ctx context.Context, timeout time.Duration) int {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		n, taken := len(h.spare), h.taken
		h.mu.Unlock()
		if n < HostSocketsMax/2 || timeout <= 0 {
			return HostSocketsMax - n
		}
		select {
		case <-taken:
		case <-deadline.C:
			return HostSocketsMax - n
		case <-ctx.Done():
			return HostSocketsMax - n
		}
	}
}

// take returns a host socket for a connection to addr, or nil when addr is
// outside the prefixes or none is left.
func (h *hostSockets) take(addr netip.Addr) *os.File {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.spare) == 0 || time.Now().Before(h.resting) {
		return nil
	}
	within := false
	for _, p := range h.prefixes {
		within = within || p.Contains(addr)
	}
	if !within {
		return nil
	}
	f := h.spare[len(h.spare)-1]
	h.spare = h.spare[:len(h.spare)-1]
	close(h.taken)
	h.taken = make(chan struct{})
	return f
}

// pause takes no socket for d, and tells whether it was not resting yet.
func (h *hostSockets) pause(d time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	first := !now.Before(h.resting)
	h.resting = now.Add(d)
	return first
}

// count returns how many the supply holds.
func (h *hostSockets) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.spare)
}

// close closes those left.
func (h *hostSockets) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	CloseFiles(h.spare)
	h.spare = nil
}

// Supply adds host sockets for connections to prefixes (see hostSockets),
// taking files over, then returns how many more the proxy would take: at
// once, or when its supply falls under half, waiting up to timeout.
func (p *Proxy) Supply(ctx context.Context, prefixes []netip.Prefix, files []*os.File, timeout time.Duration) (int, error) {
	for i, f := range files {
		if err := unconnectedTCP(f); err != nil {
			CloseFiles(files)
			return 0, fmt.Errorf("sockets: socket %d: %w", i, err)
		}
	}
	p.host.add(prefixes, files)
	return p.host.want(ctx, timeout), nil
}

// unconnectedTCP checks f is a TCP socket that neither listens nor is
// connected, and does not block (its connect then waits in Go's poller).
func unconnectedTCP(f *os.File) error {
	fd := int(f.Fd())
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return errors.New("not a stream socket")
	}
	sa, err := unix.Getsockname(fd)
	if _, ok := sa.(*unix.SockaddrInet4); err != nil || !ok {
		return errors.New("not an IPv4 socket")
	}
	if v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); v == 1 {
		return errors.New("a listening socket")
	}
	if _, err := unix.Getpeername(fd); err == nil {
		return errors.New("a connected socket")
	}
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		return errors.New("a blocking socket")
	}
	return nil
}

// dialFrom connects the host socket f to addr within ctx, and returns the
// connection; f is closed either way.
func dialFrom(ctx context.Context, f *os.File, addr netip.AddrPort) (*net.TCPConn, error) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	a4 := addr.Addr().As4()
	sa := &unix.SockaddrInet4{Port: int(addr.Port()), Addr: a4}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
		return nil, err
	}
	if cerr == unix.EINPROGRESS {
		if d, ok := ctx.Deadline(); ok {
			f.SetWriteDeadline(d)
		}
		stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
		cerr = nil
		err = rc.Write(func(fd uintptr) bool {
			if _, err := unix.Getpeername(int(fd)); err == nil {
				return true
			}
			v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
			if err == nil && v != 0 {
				err = unix.Errno(v)
			}
			cerr = err
			return err != nil
		})
		stop()
		if err != nil {
			cerr = context.Cause(ctx)
			if cerr == nil {
				cerr = err
			}
		}
	}
	if cerr != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(addr), Err: cerr}
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}
