package agent

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
)

// TestHostReachedTakesNetworksWithALocalGateway: a proxy is supplied with
// host sockets for its IPv4 networks whose gateway is an address of the
// host (here 127.0.0.1), and for no other: a gateway elsewhere (a macvlan
// network's router, an agent in a container of its own) or an IPv6-only
// endpoint gives none.
func TestHostReachedTakesNetworksWithALocalGateway(t *testing.T) {
	ins := func(eps map[string]*network.EndpointSettings) container.InspectResponse {
		return container.InspectResponse{NetworkSettings: &container.NetworkSettings{Networks: eps}}
	}
	got, err := hostReached(ins(map[string]*network.EndpointSettings{
		"app_default": {IPAddress: netip.MustParseAddr("127.18.0.3"), IPPrefixLen: 16, Gateway: netip.MustParseAddr("127.0.0.1")},
		"lan":         {IPAddress: netip.MustParseAddr("192.0.2.7"), IPPrefixLen: 24, Gateway: netip.MustParseAddr("192.0.2.1")},
		"v6":          {IPAddress: netip.Addr{}, GlobalIPv6Address: netip.MustParseAddr("fd00::3"), IPv6Gateway: netip.MustParseAddr("::1")},
	}))
	if want := []netip.Prefix{netip.MustParsePrefix("127.18.0.0/16")}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("hostReached = %v, %v; want %v", got, err, want)
	}
	for name, eps := range map[string]map[string]*network.EndpointSettings{
		"gateway elsewhere": {"lan": {IPAddress: netip.MustParseAddr("192.0.2.7"), IPPrefixLen: 24, Gateway: netip.MustParseAddr("192.0.2.1")}},
		"no network":        nil,
	} {
		if got, err := hostReached(ins(eps)); !errors.Is(err, errNoHostNetwork) {
			t.Errorf("%s: hostReached = %v, %v; want %v", name, got, err, errNoHostNetwork)
		}
	}
}
