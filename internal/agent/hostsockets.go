package agent

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/proxy"
	"github.com/dso-project/dso/internal/proxy/control"
)

// Host sockets (internal/proxy/hostsockets.go). An agent that binds a
// proxy's host ports stands in the host's network namespace; it also keeps
// the proxy supplied with unconnected sockets made there, each filtered to
// the proxy's networks the host reaches, so that the proxy's connections to
// its backends leave from the host, as HAProxy's on the host would, instead
// of crossing the bridge from the proxy's container. The proxy falls back to
// its own sockets when the supply runs out or the agent is gone.

// hostSocketProxy is the proxy control that takes host sockets: the
// agent's Proxies.
type hostSocketProxy interface {
	Feed(ctx context.Context, id string) error
}

// feedWait is how long one supply request waits for the proxy's supply to
// fall under half before it is asked again.
const feedWait = 30 * time.Second

// errNoHostNetwork ends a feed for a proxy on no network the host reaches.
var errNoHostNetwork = errors.New("the proxy is on no network whose gateway is an address of the host and whose containers may talk to each other")

// Feed keeps proxy id supplied with host sockets for its networks whose
// gateway is one of this host's addresses, until ctx ends or the proxy
// stops answering: it stopped (nil: a restarted one is fed anew), or it
// refused them (an older proxy that takes none).
func (p *Proxies) Feed(ctx context.Context, id string) error {
	ins, err := p.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	prefixes, gateways, err := p.hostReached(ctx, ins.Container)
	if err != nil {
		return err
	}
	names := make([]string, len(prefixes))
	for i, pr := range prefixes {
		names[i] = pr.String()
	}
	want := proxy.HostSocketsMax
	for {
		n := min(want, proxy.MaxListeners)
		var wait time.Duration
		if n == want {
			wait = feedWait // the proxy's supply is full with these: wait until it is used
		}
		files, err := proxy.NewHostSockets(prefixes, gateways, n)
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, wait+15*time.Second)
		r, ok, err := control.Direct(rctx, ins.Container, proxy.Request{Op: proxy.OpSockets, Prefixes: names, Timeout: proxy.Duration(wait), Files: files})
		cancel()
		proxy.CloseFiles(files)
		switch {
		case ctx.Err() != nil, (!ok || err != nil) && !p.runsStill(ctx, ins.Container):
			return nil
		case !ok:
			return errors.New("the proxy's control socket cannot be reached from the host")
		case err != nil:
			return err
		}
		want = r.Want
	}
}

// runsStill tells whether the proxy c runs still, in the same process.
func (p *Proxies) runsStill(ctx context.Context, c container.InspectResponse) bool {
	now, err := p.Docker.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
	return err == nil && now.Container.State != nil && now.Container.State.Running && c.State != nil && now.Container.State.Pid == c.State.Pid
}

// networkInspector is the part of the engine client hostReached uses
// besides ProxyDocker.
type networkInspector interface {
	NetworkInspect(ctx context.Context, id string, opts client.NetworkInspectOptions) (client.NetworkInspectResult, error)
}

// iccOption is the option of a bridge network that, "false", keeps its
// containers from talking to each other.
const iccOption = "com.docker.network.bridge.enable_icc"

// hostReached returns the IPv4 prefixes of c's networks whose gateway is
// one of this host's addresses (the host reaches them on their bridge),
// and those gateways, which the host sockets must not reach: a host's own
// address reached from the host would pass by the rules of its firewall
// for the bridge. A network whose containers may not talk to each other is
// left out: the proxy's own connections there are the engine's to allow.
func (p *Proxies) hostReached(ctx context.Context, c container.InspectResponse) ([]netip.Prefix, []netip.Addr, error) {
	local, err := localAddrs()
	if err != nil {
		return nil, nil, err
	}
	var prefixes []netip.Prefix
	var gateways []netip.Addr
	if c.NetworkSettings != nil {
		for _, ep := range c.NetworkSettings.Networks {
			if ep == nil || !ep.IPAddress.Is4() || !local[ep.Gateway] || len(prefixes) == proxy.MaxPrefixes {
				continue
			}
			ni, ok := p.Docker.(networkInspector)
			if !ok {
				return nil, nil, errors.New("the engine client inspects no network")
			}
			n, err := ni.NetworkInspect(ctx, ep.NetworkID, client.NetworkInspectOptions{})
			if err != nil {
				return nil, nil, err
			}
			if n.Network.Options[iccOption] == "false" {
				continue
			}
			prefixes = append(prefixes, netip.PrefixFrom(ep.IPAddress, ep.IPPrefixLen).Masked())
			gateways = append(gateways, ep.Gateway)
		}
	}
	if len(prefixes) == 0 {
		return nil, nil, errNoHostNetwork
	}
	return prefixes, gateways, nil
}

// feed runs a Feed for proxy id in the background, once its host ports
// were handed over, in place of one that may still run for it: a proxy
// that restarts is a new process, which the last Feed may not have seen
// go yet.
func (a *Agent) feed(ctx context.Context, id string) {
	hp, ok := a.opts.Proxy.(hostSocketProxy)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	mine := &feeder{cancel: cancel}
	a.ports.mu.Lock()
	if a.ports.feeding == nil {
		a.ports.feeding = map[string]*feeder{}
	}
	if old := a.ports.feeding[id]; old != nil {
		old.cancel()
	}
	a.ports.feeding[id] = mine
	a.ports.mu.Unlock()
	a.wg.Go(func() {
		defer func() {
			cancel()
			a.ports.mu.Lock()
			if a.ports.feeding[id] == mine {
				delete(a.ports.feeding, id)
			}
			a.ports.mu.Unlock()
		}()
		if err := hp.Feed(ctx, id); err != nil && ctx.Err() == nil {
			a.opts.Log.Info("the proxy connects to its backends from its own network", "proxy", shortID(id), "reason", err.Error())
		}
	})
}

// feeder is a running Feed.
type feeder struct{ cancel context.CancelFunc }
