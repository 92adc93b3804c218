package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// MaxListeners bounds the sockets one listen request may pass.
const MaxListeners = 32

// Adopt forwards connections from listening sockets the agent bound on the
// host and passed over the control socket (socket activation): clients of
// a host port then reach the proxy without Docker's publishing (its
// userland proxy or NAT to the container's address), while the proxy still
// reaches the backends by name on the project network (from host sockets
// the agent supplies, when it does: hostsockets.go). targets[i] is the port
// files[i] forwards to, one the proxy forwards already. The caller keeps
// (and closes) files: the proxy takes copies.
func (p *Proxy) Adopt(targets []int, files []*os.File) error {
	if len(files) != len(targets) {
		return fmt.Errorf("listen: %d target ports for %d sockets passed", len(targets), len(files))
	}
	own := map[int]bool{}
	for _, pp := range p.listeners() {
		own[pp.Target] = true
	}
	var adopted []*port
	fail := func(err error) error {
		for _, pp := range adopted {
			pp.ln.Close()
		}
		return err
	}
	for i, f := range files {
		if !own[targets[i]] {
			return fail(fmt.Errorf("listen: target port %d is not one this proxy forwards", targets[i]))
		}
		ln, err := ListenerOf(f)
		if err != nil {
			return fail(fmt.Errorf("listen: socket %d: %w", i, err))
		}
		a := ln.Addr().(*net.TCPAddr)
		adopted = append(adopted, &port{Port: Port{Listen: a.Port, Target: targets[i], Addr: a.IP.String()}, ln: ln})
	}
	p.lnMu.Lock()
	for _, pp := range adopted {
		if slices.ContainsFunc(p.ports, func(o *port) bool { return o.Addr == pp.Addr && o.Listen == pp.Listen }) {
			p.lnMu.Unlock()
			return fail(fmt.Errorf("listen: already listening on %s", net.JoinHostPort(pp.Addr, strconv.Itoa(pp.Listen))))
		}
	}
	if p.stopped {
		p.lnMu.Unlock()
		return fail(errors.New("listen: the proxy is stopping"))
	}
	for _, pp := range adopted {
		p.ports = append(p.ports, pp)
		if ctx, live := p.serving, p.live; ctx != nil {
			p.accepters.Go(func() { p.accept(ctx, live, pp) })
		}
	}
	p.lnMu.Unlock()
	p.log.Info("host listeners adopted", "ports", portsOf(adopted))
	return nil
}

// Adopted returns the host listeners the proxy adopted, and a copy of
// each (the caller closes them), in the same order.
func (p *Proxy) Adopted() ([]Port, []*os.File, error) {
	var ports []Port
	var files []*os.File
	for _, pp := range p.listeners() {
		if pp.Addr == "" {
			continue
		}
		f, err := pp.ln.File()
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, nil, fmt.Errorf("listeners: %w", err)
		}
		ports, files = append(ports, pp.Port), append(files, f)
	}
	return ports, files, nil
}

func portsOf(ps []*port) []Port {
	out := make([]Port, len(ps))
	for i, pp := range ps {
		out[i] = pp.Port
	}
	return out
}

// ListenerOf returns a copy of f as a TCP listener, refusing anything else
// (a connected socket, a unix socket, a file).
func ListenerOf(f *os.File) (*net.TCPListener, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	listening := false
	var serr error
	if err := sc.Control(func(fd uintptr) {
		var v int
		v, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		listening = v == 1
	}); err != nil {
		return nil, err
	}
	if serr != nil || !listening {
		return nil, errors.New("not a listening socket")
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, errors.New("not a TCP socket")
	}
	return tl, nil
}
