package agent

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// networks is an engine whose networks have these options, by ID.
type networks struct {
	ProxyDocker
	options map[string]map[string]string
}

func (n networks) NetworkInspect(_ context.Context, id string, _ client.NetworkInspectOptions) (client.NetworkInspectResult, error) {
	opts, ok := n.options[id]
	if !ok {
		return client.NetworkInspectResult{}, errors.New("no such network")
	}
	return client.NetworkInspectResult{Network: network.Inspect{Network: network.Network{Options: opts}}}, nil
}

// TestHostReachedTakesNetworksWithALocalGateway: a proxy is supplied with
// host sockets for its IPv4 networks whose gateway is an address of the
// host (here 127.0.0.1), which the sockets must not reach, and for no
// other: a gateway elsewhere (a macvlan network's router, an agent in a
// container of its own), an IPv6-only endpoint, or a network whose
// containers may not talk to each other gives none.
func TestHostReachedTakesNetworksWithALocalGateway(t *testing.T) {
	p := &Proxies{Docker: networks{options: map[string]map[string]string{
		"app": {}, "lan": {}, "v6": {}, "closed": {iccOption: "false"},
	}}}
	ins := func(eps map[string]*network.EndpointSettings) container.InspectResponse {
		return container.InspectResponse{NetworkSettings: &container.NetworkSettings{Networks: eps}}
	}
	local := netip.MustParseAddr("127.0.0.1")
	prefixes, gateways, err := p.hostReached(context.Background(), ins(map[string]*network.EndpointSettings{
		"app_default": {NetworkID: "app", IPAddress: netip.MustParseAddr("127.18.0.3"), IPPrefixLen: 16, Gateway: local},
		"lan":         {NetworkID: "lan", IPAddress: netip.MustParseAddr("192.0.2.7"), IPPrefixLen: 24, Gateway: netip.MustParseAddr("192.0.2.1")},
		"v6":          {NetworkID: "v6", GlobalIPv6Address: netip.MustParseAddr("fd00::3"), IPv6Gateway: netip.MustParseAddr("::1")},
		"closed":      {NetworkID: "closed", IPAddress: netip.MustParseAddr("127.19.0.3"), IPPrefixLen: 16, Gateway: local},
	}))
	if want := []netip.Prefix{netip.MustParsePrefix("127.18.0.0/16")}; err != nil || !slices.Equal(prefixes, want) || !slices.Equal(gateways, []netip.Addr{local}) {
		t.Fatalf("hostReached = %v, %v, %v; want %v, [%v]", prefixes, gateways, err, want, local)
	}
	for name, eps := range map[string]map[string]*network.EndpointSettings{
		"gateway elsewhere": {"lan": {NetworkID: "lan", IPAddress: netip.MustParseAddr("192.0.2.7"), IPPrefixLen: 24, Gateway: netip.MustParseAddr("192.0.2.1")}},
		"no ICC":            {"closed": {NetworkID: "closed", IPAddress: netip.MustParseAddr("127.19.0.3"), IPPrefixLen: 16, Gateway: local}},
		"no network":        nil,
	} {
		if prefixes, _, err := p.hostReached(context.Background(), ins(eps)); !errors.Is(err, errNoHostNetwork) {
			t.Errorf("%s: hostReached = %v, %v; want %v", name, prefixes, err, errNoHostNetwork)
		}
	}
}
