package agent

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/proxy"
	"github.com/dso-project/dso/internal/proxy/control"
)

// ProxyDocker is the part of the engine client the proxies' control uses.
type ProxyDocker interface {
	control.Docker
	ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error)
	ContainerInspect(ctx context.Context, id string, opts client.ContainerInspectOptions) (client.ContainerInspectResult, error)
}

// Proxies drives the proxy containers of rolling services through their
// control (internal/proxy) and records what they did in the metrics. It is
// the agent's rotate.Proxy.
type Proxies struct {
	Docker  ProxyDocker
	Metrics *metrics.Metrics // optional
	// Agent is the dso.agent label of the proxies this agent drives.
	Agent string

	mu       sync.Mutex
	sessions map[string]*ctlSession // by proxy container ID
}

// ctlSession is the control session kept open with one proxy while the
// agent talks to it (a rotation: pin, probe, switch, drain, back to the
// service), so that each request costs no docker exec, when the proxy's
// socket cannot be reached from the host (control.Direct). It closes after
// sessionIdle without a request.
type ctlSession struct {
	mu      sync.Mutex // one request at a time
	s       *control.Session
	idle    *time.Timer
	refused bool // the proxy's dso-init has no sessions (an older one)
}

const sessionIdle = 10 * time.Second

func (p *Proxies) send(ctx context.Context, id string, req proxy.Request, wait time.Duration) (proxy.Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+15*time.Second)
	defer cancel()
	if ins, err := p.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); err == nil {
		if r, ok, err := control.Direct(ctx, ins.Container, req); ok {
			return r, err
		}
	}
	if req.Op != proxy.OpStats { // scrapes keep no session open
		if r, ok, err := p.viaSession(ctx, id, req); ok {
			return r, err
		}
	}
	return control.Send(ctx, p.Docker, id, req)
}

// viaSession sends req through the session with proxy id, opened when
// there is none. ok is false when it could not: the session is busy (a
// drain), broke, or the proxy has none; the caller then sends req with an
// exec of its own (every request can be taken twice).
func (p *Proxies) viaSession(ctx context.Context, id string, req proxy.Request) (r proxy.Reply, ok bool, err error) {
	p.mu.Lock()
	if p.sessions == nil {
		p.sessions = map[string]*ctlSession{}
	}
	cs := p.sessions[id]
	if cs == nil {
		cs = &ctlSession{}
		p.sessions[id] = cs
	}
	p.mu.Unlock()
	if !cs.mu.TryLock() {
		return proxy.Reply{}, false, nil
	}
	defer cs.mu.Unlock()
	if cs.refused {
		return proxy.Reply{}, false, nil
	}
	fresh := cs.s == nil
	if fresh {
		if cs.s, err = control.Open(ctx, p.Docker, id); err != nil {
			return proxy.Reply{}, false, nil
		}
	}
	r, err = cs.s.Send(ctx, req)
	if errors.Is(err, control.ErrSessionLost) {
		cs.s.Close()
		cs.s = nil
		cs.refused = fresh && ctx.Err() == nil
		return proxy.Reply{}, false, nil
	}
	if cs.idle == nil {
		cs.idle = time.AfterFunc(sessionIdle, func() { p.closeSession(id, cs) })
	} else {
		cs.idle.Reset(sessionIdle)
	}
	return r, true, err
}

// closeSession ends an idle session.
func (p *Proxies) closeSession(id string, cs *ctlSession) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.s != nil {
		cs.s.Close()
		cs.s = nil
	}
	p.mu.Lock()
	if p.sessions[id] == cs {
		delete(p.sessions, id)
	}
	p.mu.Unlock()
}

// Set sends new connections to backends.
func (p *Proxies) Set(ctx context.Context, id string, backends []string) error {
	start := time.Now()
	_, err := p.send(ctx, id, proxy.Request{Op: "set", Backends: backends}, 0)
	if err == nil && p.Metrics != nil {
		p.Metrics.ProxySwitch.Observe(time.Since(start).Seconds())
	}
	return err
}

// Hold makes new connections wait until the next Set.
func (p *Proxies) Hold(ctx context.Context, id string) error {
	_, err := p.send(ctx, id, proxy.Request{Op: "hold"}, 0)
	return err
}

// Drain waits until backend's connections end, at most timeout, then
// closes the rest.
func (p *Proxies) Drain(ctx context.Context, id, backend string, timeout time.Duration) error {
	r, err := p.send(ctx, id, proxy.Request{Op: "drain", Backend: backend, Timeout: proxy.Duration(timeout)}, timeout)
	if err == nil && r.Drain != nil && p.Metrics != nil {
		p.Metrics.ProxyDrained.WithLabelValues("drained").Add(float64(r.Drain.Drained))
		p.Metrics.ProxyDrained.WithLabelValues("closed").Add(float64(r.Drain.Closed))
	}
	return err
}

// Probe connects to every proxied port of backend.
func (p *Proxies) Probe(ctx context.Context, id, backend string, timeout time.Duration) error {
	_, err := p.send(ctx, id, proxy.Request{Op: "probe", Backend: backend, Timeout: proxy.Duration(timeout)}, timeout)
	return err
}

var (
	descActive   = prometheus.NewDesc("dso_proxy_connections", "Live connections through a proxy port.", []string{"project", "service", "port"}, nil)
	descAccepted = prometheus.NewDesc("dso_proxy_connections_accepted_total", "Connections a proxy port accepted.", []string{"project", "service", "port"}, nil)
	descBytes    = prometheus.NewDesc("dso_proxy_bytes_total", "Bytes a proxy port forwarded, by direction.", []string{"project", "service", "port", "direction"}, nil)
	descFailures = prometheus.NewDesc("dso_proxy_dial_failures_total", "Failed connection attempts from a proxy port to its backend.", []string{"project", "service", "port"}, nil)
	descDropped  = prometheus.NewDesc("dso_proxy_dropped_total", "Clients a proxy port closed because no backend answered in time.", []string{"project", "service", "port"}, nil)
)

// Describe implements prometheus.Collector.
func (p *Proxies) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActive, descAccepted, descBytes, descFailures, descDropped} {
		ch <- d
	}
}

// Collect asks every running proxy of this agent for its counters; they
// live in the proxy, which outlives the agent.
func (p *Proxies) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f := client.Filters{}.Add("label", compose.LabelAgent+"="+p.Agent, compose.LabelProxyFor).Add("status", "running")
	list, err := p.Docker.ContainerList(ctx, client.ContainerListOptions{Filters: f})
	if err != nil {
		return
	}
	for _, c := range list.Items {
		r, err := p.send(ctx, c.ID, proxy.Request{Op: "stats"}, 0)
		if err != nil || r.Stats == nil {
			continue
		}
		project, service := c.Labels["com.docker.compose.project"], c.Labels[compose.LabelProxyFor]
		// A host listener the agent handed over may have the port of the
		// proxy's own listener in its container (3306:3306): one series.
		byPort := map[int]proxy.PortStats{}
		var order []int
		for _, ps := range r.Stats.Ports {
			sum, seen := byPort[ps.Listen]
			if !seen {
				order = append(order, ps.Listen)
			}
			sum.Active += ps.Active
			sum.Accepted += ps.Accepted
			sum.BytesToBackend += ps.BytesToBackend
			sum.BytesToClient += ps.BytesToClient
			sum.DialFailures += ps.DialFailures
			sum.Dropped += ps.Dropped
			byPort[ps.Listen] = sum
		}
		for _, n := range order {
			ps, port := byPort[n], strconv.Itoa(n)
			ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(ps.Active), project, service, port)
			ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(ps.Accepted), project, service, port)
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(ps.BytesToBackend), project, service, port, "to_backend")
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(ps.BytesToClient), project, service, port, "to_client")
			ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(ps.DialFailures), project, service, port)
			ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(ps.Dropped), project, service, port)
		}
	}
}

// Listeners returns the host listeners proxy id took over (see Listen),
// with a copy of each (the caller closes them), in the same order.
func (p *Proxies) Listeners(ctx context.Context, id string) ([]proxy.Port, []*os.File, error) {
	r, err := p.direct(ctx, id, proxy.Request{Op: proxy.OpListeners})
	if err != nil {
		return nil, nil, err
	}
	if len(r.Ports) != len(r.Files) {
		proxy.CloseFiles(r.Files)
		return nil, nil, errors.New("the proxy did not pass one socket for each listener it listed")
	}
	return r.Ports, r.Files, nil
}

// Listen hands listening sockets to proxy id, targets[i] naming the port
// files[i] forwards to. Descriptors pass only over the control socket
// reached from the host (an exec carries none).
func (p *Proxies) Listen(ctx context.Context, id string, targets []int, files []*os.File) error {
	_, err := p.direct(ctx, id, proxy.Request{Op: proxy.OpListen, Targets: targets, Files: files})
	return err
}

// direct sends req to proxy id over its control socket reached from the
// host, the only way sockets pass (an exec carries none).
func (p *Proxies) direct(ctx context.Context, id string, req proxy.Request) (proxy.Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ins, err := p.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return proxy.Reply{}, err
	}
	r, ok, err := control.Direct(ctx, ins.Container, req)
	if !ok {
		return r, errors.New("the agent cannot reach the proxy's control socket from the host (it must run as root on the engine's host), and sockets do not pass through docker exec")
	}
	return r, err
}
