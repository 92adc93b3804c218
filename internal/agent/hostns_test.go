package agent

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// bridges is an engine whose bridge networks have these IPAM configs.
type bridges []network.IPAMConfig

func (b bridges) NetworkList(ctx context.Context, opts client.NetworkListOptions) (client.NetworkListResult, error) {
	var r client.NetworkListResult
	for _, c := range b {
		r.Items = append(r.Items, network.Summary{Network: network.Network{Driver: "bridge", IPAM: network.IPAM{Config: []network.IPAMConfig{c}}}})
	}
	return r, nil
}

// TestHostPortsHereNeedsABridgeGatewayOfItsOwn: the agent binds host ports
// when one of its addresses is a bridge's gateway, named or, as on the
// default bridge, the subnet's first address; not when the gateways are
// elsewhere (the agent in a container of its own). Without the
// capabilities (a test run not as root) or outside the host's PID
// namespace it never does, and says why.
func TestHostPortsHereNeedsABridgeGatewayOfItsOwn(t *testing.T) {
	here := handOverHere()
	for _, tc := range []struct {
		name  string
		nets  bridges
		binds bool
	}{
		{"named gateway", bridges{{Subnet: netip.MustParsePrefix("192.0.2.0/24"), Gateway: netip.MustParseAddr("192.0.2.1")}, {Subnet: netip.MustParsePrefix("127.0.0.0/8"), Gateway: netip.MustParseAddr("127.0.0.1")}}, true},
		{"default bridge: no gateway named", bridges{{Subnet: netip.MustParsePrefix("127.0.0.0/8")}}, true},
		{"gateways elsewhere", bridges{{Subnet: netip.MustParsePrefix("192.0.2.0/24"), Gateway: netip.MustParseAddr("192.0.2.1")}, {Subnet: netip.MustParsePrefix("127.0.0.0/8"), Gateway: netip.MustParseAddr("127.0.0.2")}}, false},
		{"no bridge", nil, false},
	} {
		err := hostPortsHere(t.Context(), tc.nets)
		switch {
		case here != nil:
			if err == nil || err.Error() != here.Error() {
				t.Errorf("%s: where it cannot hand ports over (%v) got %v", tc.name, here, err)
			}
		case tc.binds && err != nil:
			t.Errorf("%s: %v, want the agent to bind", tc.name, err)
		case !tc.binds && (err == nil || !strings.Contains(err.Error(), "not in the engine's network namespace")):
			t.Errorf("%s: %v, want: not in the engine's network namespace", tc.name, err)
		}
	}
}
