package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/proxy"
	"github.com/dso-project/dso/internal/rotate"
)

// Host ports of proxies (socket activation). When `up` plans a proxy with
// the label compose.LabelProxyListen (compose.Wiring.BindHostPorts), Docker
// publishes nothing onto it: the agent binds those host ports itself and
// hands the listening sockets to the proxy over its control socket. Clients
// then reach the proxy in the host's network stack, without Docker's
// userland proxy or NAT to the container in between, while the proxy still
// reaches the backends by name on the project network (the agent supplies
// it with host sockets for those connections too: hostsockets.go). The sockets are bound when
// `up` registers the project, before any container starts, so that a port
// in use stops `up` and a client that connects before the proxy runs waits
// in the socket's backlog instead of being refused; they are handed over
// when the proxy starts (and again to a proxy that runs without them when
// the agent starts). The proxy keeps them across agent restarts. The agent
// keeps its copies of the sockets it handed while the proxy runs, and for
// restartHold after it stops: a proxy restarted meanwhile (docker restart,
// docker dso restart, a crash Docker restarts) gets the same sockets
// again, and the clients that connected in between waited in the backlog
// instead of being refused.

// hostPortProxy is the proxy control that takes sockets: the agent's
// Proxies.
type hostPortProxy interface {
	Listeners(ctx context.Context, id string) ([]proxy.Port, []*os.File, error)
	Listen(ctx context.Context, id string, targets []int, files []*os.File) error
}

// boundPorts are the sockets the agent holds for proxies: bound for a
// proxy that has not started yet, or kept for one it handed them to.
type boundPorts struct {
	mu   sync.Mutex
	byID map[string]*bound
	// handing is held while sockets are handed to a proxy: a start event
	// and the agent's connection may ask for the same proxy at once, and
	// the second must see what the first handed over.
	handing sync.Mutex
	// feeding holds the Feed running for each proxy (hostsockets.go).
	feeding map[string]*feeder
}

type bound struct {
	lns   map[compose.Binding]*net.TCPListener
	timer *time.Timer // closes them; nil while the proxy runs
}

// unstartedHold bounds how long sockets bound at a registration wait for
// their proxy to start (a `create` without an `up`): then they are closed,
// and bound again when it starts.
const unstartedHold = time.Minute

// restartHold bounds how long the agent keeps a proxy's sockets after the
// proxy stopped: long enough for a restart, short enough that a proxy
// stopped for good (docker dso stop) does not keep clients waiting long
// for nothing; they are then reset, and later ones refused.
const restartHold = 10 * time.Second

// bindProject binds the host ports of project's proxies that do not run
// yet, at its registration.
func (a *Agent) bindProject(ctx context.Context, project string) error {
	if _, ok := a.opts.Proxy.(hostPortProxy); !ok {
		return nil
	}
	f := client.Filters{}.Add("label", compose.LabelAgent+"="+a.opts.ID, "com.docker.compose.project="+project, compose.LabelProxyListen)
	list, err := a.opts.Docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return fmt.Errorf("list the proxies: %w", err)
	}
	for _, c := range list.Items {
		if c.State == "running" {
			continue
		}
		bindings, err := compose.ParseBindings(c.Labels[compose.LabelProxyListen])
		if err != nil {
			return fmt.Errorf("proxy of service %s: label %s: %w", c.Labels[rotate.LabelProxyFor], compose.LabelProxyListen, err)
		}
		a.ports.mu.Lock()
		b := a.ports.byID[c.ID]
		if b == nil {
			b = &bound{lns: map[compose.Binding]*net.TCPListener{}}
			if a.ports.byID == nil {
				a.ports.byID = map[string]*bound{}
			}
			a.ports.byID[c.ID] = b
			id := c.ID
			b.timer = time.AfterFunc(unstartedHold, func() { a.ports.release(id) })
		}
		for _, x := range bindings {
			if b.lns[x] != nil {
				continue
			}
			ln, err := x.Listen()
			if err != nil {
				a.ports.mu.Unlock()
				a.ports.release(c.ID)
				return fmt.Errorf("service %q: host port %s: %w", c.Labels[rotate.LabelProxyFor], net.JoinHostPort(x.IP, strconv.Itoa(x.Port)), unwrapOp(err))
			}
			b.lns[x] = ln
		}
		a.ports.mu.Unlock()
	}
	return nil
}

// unwrapOp drops the addresses a net.OpError repeats ("listen tcp
// 127.0.0.1:80: bind: address already in use" becomes "bind: address
// already in use").
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// take removes and returns the sockets bound for proxy id.
func (p *boundPorts) take(id string) map[compose.Binding]*net.TCPListener {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.byID[id]
	if b == nil {
		return nil
	}
	if b.timer != nil {
		b.timer.Stop()
	}
	delete(p.byID, id)
	return b.lns
}

// keep holds lns, the sockets of proxy id which runs with them, until it
// stops (see stopped).
func (p *boundPorts) keep(id string, lns map[compose.Binding]*net.TCPListener) {
	if len(lns) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byID == nil {
		p.byID = map[string]*bound{}
	}
	p.byID[id] = &bound{lns: lns}
}

// stopped starts the wait of proxy id's sockets for its next start, after
// a hand-over to it has ended.
func (p *boundPorts) stopped(id string) {
	p.handing.Lock()
	defer p.handing.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.byID[id]; b != nil && b.timer == nil {
		b.timer = time.AfterFunc(restartHold, func() { p.release(id) })
	}
}

// release closes the sockets bound for proxy id.
func (p *boundPorts) release(id string) {
	for _, ln := range p.take(id) {
		ln.Close()
	}
}

// activate hands proxy id the host ports it does not listen on yet: those
// the agent holds (bound at the registration, or kept from an earlier
// start), else bound now; the agent then keeps a copy of each, taken from
// the proxy for those it listens on already. Called when a proxy starts,
// and for each running proxy when the agent connects to the engine.
func (a *Agent) activate(ctx context.Context, id string, labels map[string]string) {
	a.ports.handing.Lock()
	defer a.ports.handing.Unlock()
	held := a.ports.take(id)
	if held == nil {
		held = map[compose.Binding]*net.TCPListener{}
	}
	kept := false
	defer func() {
		if kept {
			a.ports.keep(id, held)
			return
		}
		for _, ln := range held {
			ln.Close()
		}
	}()
	hp, ok := a.opts.Proxy.(hostPortProxy)
	label := labels[compose.LabelProxyListen]
	if !ok || label == "" {
		return
	}
	service, project := labels[rotate.LabelProxyFor], labels["com.docker.compose.project"]
	err := func() error {
		bindings, err := compose.ParseBindings(label)
		if err != nil {
			return fmt.Errorf("label %s: %w", compose.LabelProxyListen, err)
		}
		has, copies, err := hp.Listeners(ctx, id)
		if err != nil {
			return err
		}
		// The agent keeps a copy of what the proxy listens on already
		// (handed over by an earlier agent), for the proxy's next restart.
		// The proxy could pass anything: only a listening TCP socket whose
		// own address is that of a binding is kept, and it only ever goes
		// back to a proxy.
		taken := 0
		for _, f := range copies {
			ln, err := proxy.ListenerOf(f)
			f.Close()
			if err != nil {
				continue
			}
			i := slices.IndexFunc(bindings, func(x compose.Binding) bool { return held[x] == nil && isBinding(ln.Addr().(*net.TCPAddr), x) })
			if i < 0 {
				ln.Close()
				continue
			}
			held[bindings[i]] = ln
			taken++
		}
		if taken > 0 {
			a.opts.Log.Info("kept copies of the host ports the proxy listens on", "proxy", shortID(id), "project", project, "service", service, "ports", taken)
		}
		var targets []int
		var files []*os.File
		defer func() { proxy.CloseFiles(files) }()
		for _, x := range bindings {
			if adopted(has, x) {
				continue
			}
			ln := held[x]
			if ln == nil {
				if ln, err = x.Listen(); err != nil {
					return fmt.Errorf("host port %s: %w", net.JoinHostPort(x.IP, strconv.Itoa(x.Port)), unwrapOp(err))
				}
				held[x] = ln
			}
			f, err := ln.File()
			if err != nil {
				return err
			}
			files = append(files, f)
			targets = append(targets, x.Target)
		}
		if len(files) == 0 {
			kept = true // it listens on them all: the agent keeps its copies
			a.feed(ctx, id)
			return nil
		}
		if err := hp.Listen(ctx, id, targets, files); err != nil {
			return err
		}
		kept = true
		a.feed(ctx, id)
		a.opts.Log.Info("host ports handed to the proxy", "proxy", shortID(id), "project", project, "service", service, "ports", len(files))
		return nil
	}()
	if err != nil && ctx.Err() == nil {
		a.opts.Log.Error("the proxy has no host ports: handing them over failed", "proxy", shortID(id), "project", project, "service", service, "error", err)
		a.emit(events.Event{Type: events.TypeContainer, Level: "ERROR", Container: shortID(id), Project: project, Service: service,
			Message: "the proxy has no host ports: handing them over failed: " + err.Error()})
	}
}

// isBinding reports whether a listener's address is that of x.
func isBinding(a *net.TCPAddr, x compose.Binding) bool {
	return adopted([]proxy.Port{{Listen: a.Port, Addr: a.IP.String()}}, x)
}

// adopted reports whether one of a proxy's host listeners is x.
func adopted(has []proxy.Port, x compose.Binding) bool {
	for _, p := range has {
		if p.Listen == x.Port && (p.Addr == x.IP || wildcard(p.Addr) && wildcard(x.IP)) {
			return true
		}
	}
	return false
}

func wildcard(ip string) bool { return ip == "" || ip == "0.0.0.0" || ip == "::" }
