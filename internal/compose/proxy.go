package compose

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/proxy"
)

// Labels of rolling services and their proxies.
const (
	// LabelHostPorts is the seed's form of host ports that DSO's proxy
	// owns: "HOST:CONTAINER[,…]" (each as compose's short port syntax),
	// the container ports being in the service's expose.
	LabelHostPorts = "dso.host_ports"
	// LabelProxyScheduling chooses the scheduling policy of the threads of
	// a service's proxy that move the bytes: "auto" (the default), "normal"
	// or "batch" (dso-init proxy --scheduling, proxy.Scheduling).
	LabelProxyScheduling = "dso.proxy.scheduling"
	// LabelProxyFor marks a proxy container: the service whose host ports
	// it owns.
	LabelProxyFor = "dso.proxy.for"
	// LabelProxyListen lists the host ports the agent binds for a proxy
	// and hands over to it (Wiring.BindHostPorts), as Bindings.String.
	LabelProxyListen = "dso.proxy.listen"
)

// ProxyImage is the image proxy containers run: an empty image (imported
// from an empty tar), since the proxy is dso-init, bind-mounted.
const ProxyImage = "dso/proxy-base:1"

// proxyUID is the user the proxy runs as (nobody).
const proxyUID = 65534

// ProxyPlan is the proxy container that owns a rolling service's host
// ports.
type ProxyPlan struct {
	Service    string                    // the proxy's compose service: NAME-dso-proxy
	Ports      []types.ServicePortConfig // as the service declared them
	Networks   []string                  // the service's networks
	Scheduling proxy.Scheduling          // LabelProxyScheduling
}

// ProxyService is the name of the proxy service of service.
func ProxyService(service string) string { return service + "-dso-proxy" }

// planProxy returns the proxy of a service that publishes host ports
// (compose ports or the seed's dso.host_ports label), or nil. A rolling
// service (required) needs it; a restart service whose compose ports the
// proxy cannot own (UDP, a range, network_mode) keeps Docker's own
// publishing instead, as compose would have it.
func planProxy(p *types.Project, svc types.ServiceConfig, img Image, required bool) (*ProxyPlan, error) {
	var sched proxy.Scheduling
	if name, ok := svc.Labels[LabelProxyScheduling]; ok {
		var err error
		if sched, err = proxy.ParseScheduling(name); err != nil {
			return nil, fmt.Errorf("service %q, label %s %w", svc.Name, LabelProxyScheduling, err)
		}
	}
	ports := slices.Clone(svc.Ports)
	label, hasLabel := svc.Labels[LabelHostPorts]
	if hasLabel {
		fromLabel, err := parseHostPorts(label)
		if err != nil {
			return nil, fmt.Errorf("service %q, label %s %q: %w", svc.Name, LabelHostPorts, label, err)
		}
		for _, pc := range fromLabel {
			if !exposes(svc, img, pc.Target) {
				return nil, fmt.Errorf("service %q, label %s %q: container port %d is not exposed (add it to the service's expose: [\"%d\"])", svc.Name, LabelHostPorts, label, pc.Target, pc.Target)
			}
		}
		ports = append(ports, fromLabel...)
	}
	if len(ports) == 0 {
		return nil, nil
	}
	if err := proxyCanOwn(p, svc, ports); err != nil {
		switch {
		case hasLabel:
			return nil, fmt.Errorf("%w, and the label %s needs it", err, LabelHostPorts)
		case required:
			return nil, fmt.Errorf("%w, which a rolling service needs; strategy restart leaves such ports to Docker", err)
		}
		return nil, nil
	}
	nets := make([]string, 0, len(svc.Networks))
	for n := range svc.Networks {
		nets = append(nets, n)
	}
	slices.Sort(nets)
	return &ProxyPlan{Service: ProxyService(svc.Name), Ports: ports, Networks: nets, Scheduling: sched}, nil
}

// proxyCanOwn says why DSO's proxy cannot own the host ports of svc, or
// nil.
func proxyCanOwn(p *types.Project, svc types.ServiceConfig, ports []types.ServicePortConfig) error {
	for _, pc := range ports {
		if pc.Protocol != "" && pc.Protocol != "tcp" {
			return fmt.Errorf("service %q, port %s: DSO's proxy forwards TCP only", svc.Name, portString(pc))
		}
		if strings.Contains(pc.Published, "-") {
			return fmt.Errorf("service %q, port %s: DSO's proxy takes one host port per container port, not a range", svc.Name, portString(pc))
		}
	}
	if svc.NetworkMode != "" {
		return fmt.Errorf("service %q: network_mode %q leaves no compose network for DSO's proxy", svc.Name, svc.NetworkMode)
	}
	if _, taken := p.Services[ProxyService(svc.Name)]; taken {
		return fmt.Errorf("service %q: DSO's proxy needs the service name %q, which the project already uses", svc.Name, ProxyService(svc.Name))
	}
	return nil
}

// parseHostPorts reads the dso.host_ports label.
func parseHostPorts(label string) ([]types.ServicePortConfig, error) {
	var out []types.ServicePortConfig
	for _, item := range strings.Split(label, ",") {
		item = strings.TrimSpace(item)
		host, _, ok := strings.Cut(strings.TrimSuffix(item, "/tcp"), ":")
		if !ok || host == "" {
			return nil, fmt.Errorf("%q: expected HOST:CONTAINER, such as 3306:3306", item)
		}
		pcs, err := types.ParsePortConfig(item)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", item, err)
		}
		out = append(out, pcs...)
	}
	return out, nil
}

// exposes reports whether the service or its image exposes port (TCP).
func exposes(svc types.ServiceConfig, img Image, port uint32) bool {
	for _, e := range append(slices.Clone(svc.Expose), img.Exposed...) {
		e = strings.TrimSuffix(e, "/tcp")
		lo, hi, isRange := strings.Cut(e, "-")
		l, err1 := strconv.ParseUint(lo, 10, 32)
		h, err2 := strconv.ParseUint(hi, 10, 32)
		switch {
		case !isRange && err1 == nil && uint32(l) == port:
			return true
		case isRange && err1 == nil && err2 == nil && uint32(l) <= port && port <= uint32(h):
			return true
		}
	}
	return false
}

func portString(pc types.ServicePortConfig) string {
	s := strconv.Itoa(int(pc.Target))
	if pc.Published != "" {
		s = pc.Published + ":" + s
	}
	if pc.HostIP != "" {
		s = pc.HostIP + ":" + s
	}
	if pc.Protocol != "" {
		s += "/" + pc.Protocol
	}
	return s
}

// HostPort is one host address a project publishes.
type HostPort struct {
	Service string // the service whose proxy publishes it
	IP      string // "" for every address
	Port    int
}

func (h HostPort) String() string { return net.JoinHostPort(h.IP, strconv.Itoa(h.Port)) }

// HostPorts lists the fixed host ports the plan's proxies will publish.
func (pl *Plan) HostPorts() []HostPort {
	var out []HostPort
	for _, sp := range pl.Services {
		if sp.Proxy == nil {
			continue
		}
		for _, pc := range sp.Proxy.Ports {
			if n, err := strconv.Atoi(pc.Published); err == nil && n > 0 {
				out = append(out, HostPort{Service: sp.Name, IP: pc.HostIP, Port: n})
			}
		}
	}
	return out
}

// checkClaims fails when two services, or two ports of one, claim the
// same host port (on overlapping addresses).
func checkClaims(p *types.Project, plans []ServicePlan) error {
	type claim struct{ ip, port, proto string }
	owner := map[claim]string{}
	extra := map[string][]types.ServicePortConfig{}
	for _, sp := range plans {
		if sp.Proxy != nil {
			extra[sp.Name] = sp.Proxy.Ports
		}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names {
		ports := p.Services[n].Ports
		if e, ok := extra[n]; ok {
			ports = e
		}
		for _, pc := range ports {
			if pc.Published == "" || strings.Contains(pc.Published, "-") {
				continue
			}
			proto := pc.Protocol
			if proto == "" {
				proto = "tcp"
			}
			c := claim{pc.HostIP, pc.Published, proto}
			for other, by := range owner {
				if other.port == c.port && other.proto == c.proto && (other.ip == c.ip || other.ip == "" || c.ip == "" || other.ip == "0.0.0.0" || c.ip == "0.0.0.0") {
					if by == n {
						return fmt.Errorf("service %q: host port %s/%s is claimed twice, by two of its ports", n, pc.Published, proto)
					}
					return fmt.Errorf("host port %s/%s is claimed twice: by service %q and by service %q", pc.Published, proto, by, n)
				}
			}
			owner[c] = n
		}
	}
	return nil
}

// proxyService is the compose service of a proxy.
func (pl *Plan) proxyService(sp ServicePlan) map[string]any {
	pp := sp.Proxy
	entry := []string{initproc.InitPath, "proxy", "--backend", sp.Name}
	var targets []uint32
	for _, pc := range pp.Ports {
		if !slices.Contains(targets, pc.Target) {
			targets = append(targets, pc.Target)
		}
	}
	slices.Sort(targets)
	for _, t := range targets {
		entry = append(entry, "--port", strconv.Itoa(int(t)))
	}
	if pp.Scheduling != proxy.SchedulingAuto {
		entry = append(entry, "--scheduling", pp.Scheduling.String())
	}
	escapeAll(entry)
	labels := map[string]string{LabelProxyFor: sp.Name, LabelAgent: pl.Wiring.Agent}
	var ports []map[string]any
	if bindings, fixed := pp.bindings(); pl.Wiring.BindHostPorts && fixed {
		// The agent binds them; Docker publishes none.
		labels[LabelProxyListen] = bindings.String()
	} else {
		ports = publish(pp.Ports)
	}
	s := map[string]any{
		"image":        ProxyImage,
		"pull_policy":  "never",
		"entrypoint":   entry,
		"user":         fmt.Sprintf("%d:%d", proxyUID, proxyUID),
		"read_only":    true,
		"cap_drop":     []string{"ALL"},
		"security_opt": []string{"no-new-privileges:true"},
		"sysctls":      map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
		"restart":      "unless-stopped",
		"volumes":      []map[string]any{{"type": "bind", "source": Escape(pl.Wiring.InitBinary), "target": initproc.InitPath, "read_only": true}},
		"tmpfs":        []string{fmt.Sprintf("%s:uid=%d,gid=%d,mode=0700,size=1m", initproc.RunDir, proxyUID, proxyUID)},
		"labels":       labels,
	}
	if len(ports) > 0 {
		s["ports"] = ports
	}
	if len(pp.Networks) > 0 {
		s["networks"] = pp.Networks
	}
	return s
}

// publish is the compose ports of a proxy that Docker publishes.
func publish(pcs []types.ServicePortConfig) []map[string]any {
	ports := make([]map[string]any, 0, len(pcs))
	for _, pc := range pcs {
		m := map[string]any{"target": pc.Target, "protocol": "tcp", "mode": "ingress"}
		if pc.HostIP != "" {
			m["host_ip"] = pc.HostIP
		}
		if pc.Published != "" {
			m["published"] = pc.Published
		}
		ports = append(ports, m)
	}
	return ports
}

// Binding is a host port the agent binds for a proxy: connections to
// IP:Port ("" for every address) go to the service's port Target.
type Binding struct {
	IP     string
	Port   int
	Target int
}

// Listen binds b's host port as Docker publishes it: every address, IPv4
// and IPv6, for no address; 0.0.0.0 for IPv4 only (Go would take it for
// both).
func (b Binding) Listen() (*net.TCPListener, error) {
	network := "tcp"
	if b.IP == "0.0.0.0" {
		network = "tcp4"
	}
	ln, err := net.Listen(network, net.JoinHostPort(b.IP, strconv.Itoa(b.Port)))
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// Bindings are the host ports of one proxy.
type Bindings []Binding

// String writes b as the label LabelProxyListen holds: "IP:PORT:TARGET"
// items, IPv6 addresses in brackets, "" for every address, comma apart.
func (b Bindings) String() string {
	items := make([]string, len(b))
	for i, x := range b {
		items[i] = net.JoinHostPort(x.IP, strconv.Itoa(x.Port)) + ":" + strconv.Itoa(x.Target)
	}
	return strings.Join(items, ",")
}

// ParseBindings reads the label LabelProxyListen.
func ParseBindings(label string) (Bindings, error) {
	var out Bindings
	for _, item := range strings.Split(label, ",") {
		i := strings.LastIndex(item, ":")
		ok := i >= 0
		hostPort, target := item[:max(i, 0)], item[i+1:]
		ip, port, err := net.SplitHostPort(hostPort)
		p, perr := strconv.Atoi(port)
		t, terr := strconv.Atoi(target)
		if !ok || err != nil || perr != nil || terr != nil || p < 1 || p > 65535 || t < 1 || t > 65535 || ip != "" && net.ParseIP(ip) == nil {
			return nil, fmt.Errorf("%q is not IP:PORT:TARGET", item)
		}
		out = append(out, Binding{IP: ip, Port: p, Target: t})
	}
	return out, nil
}

// bindings are the proxy's host ports as the agent binds them; fixed is
// false when one of them is left to the engine to pick (which only
// Docker's publishing shows).
func (pp *ProxyPlan) bindings() (b Bindings, fixed bool) {
	for _, pc := range pp.Ports {
		n, err := strconv.Atoi(pc.Published)
		if err != nil || n < 1 {
			return nil, false
		}
		b = append(b, Binding{IP: pc.HostIP, Port: n, Target: int(pc.Target)})
	}
	return b, true
}
