package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/moby/moby/client"
)

// networkLister is the part of the engine client hostPortsHere uses.
type networkLister interface {
	NetworkList(ctx context.Context, opts client.NetworkListOptions) (client.NetworkListResult, error)
}

// hostPortsHere tells whether this agent can bind the host ports of proxies
// and hand them over (hostports.go), and when it cannot, why. It must hold
// the capabilities that bind a port under 1024 and reach the control socket
// of a proxy, whose process runs as nobody, through /proc, in the host's
// PID namespace (handOverHere); and it must stand in the engine's network
// namespace, where Docker would have published the ports: one of its
// addresses is the gateway of a bridge network, which the engine gives to
// that network's bridge (the subnet's first address when the network names
// none, as the default bridge does). An agent in a container of its own
// (systemd in a container) does not, and `up` then lets Docker publish.
func hostPortsHere(ctx context.Context, docker networkLister) error {
	if err := handOverHere(); err != nil {
		return err
	}
	nets, err := docker.NetworkList(ctx, client.NetworkListOptions{Filters: client.Filters{}.Add("driver", "bridge")})
	if err != nil {
		return fmt.Errorf("listing the engine's bridge networks: %w", err)
	}
	local, err := localAddrs()
	if err != nil {
		return err
	}
	for _, n := range nets.Items {
		for _, c := range n.IPAM.Config {
			gw := c.Gateway
			if !gw.IsValid() && c.Subnet.IsValid() {
				gw = c.Subnet.Masked().Addr().Next() // the engine's default, as for its default bridge
			}
			if local[gw] {
				return nil
			}
		}
	}
	return errors.New("no bridge network's gateway is an address of this agent: it is not in the engine's network namespace")
}

// localAddrs returns the addresses of this network namespace.
func localAddrs() (map[netip.Addr]bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing this host's addresses: %w", err)
	}
	local := map[netip.Addr]bool{}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			local[p.Addr()] = true
		}
	}
	return local, nil
}
