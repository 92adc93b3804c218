package testbed

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// Network creates a bridge network with a name unique to this test and
// returns the name. It is removed at t.Cleanup, after the containers
// started on it later (cleanups run last first).
func Network(t testing.TB) string {
	t.Helper()
	cli := Docker(t)
	name := "dsotest-net-" + uniqueSuffix()
	if _, err := cli.NetworkCreate(t.Context(), name, client.NetworkCreateOptions{Driver: "bridge", Labels: map[string]string{Label: "1"}}); err != nil {
		t.Fatalf("testbed: creating network %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupContext()
		defer cancel()
		if _, err := cli.NetworkRemove(ctx, name, client.NetworkRemoveOptions{}); err != nil && !isNotFound(err) {
			t.Errorf("testbed: cleanup: removing network %s: %v", name, err)
		}
	})
	return name
}

// OnNetwork is the networking config attaching a container to the network
// named net with the given DNS aliases.
func OnNetwork(net string, aliases ...string) *network.NetworkingConfig {
	return &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{net: {Aliases: aliases}}}
}

// ContainerIP returns the IPv4 address of the container on the network
// named net.
func ContainerIP(t testing.TB, containerID, net string) netip.Addr {
	t.Helper()
	res, err := Docker(t).ContainerInspect(t.Context(), containerID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("testbed: inspecting container %s: %v", containerID, err)
	}
	if ns := res.Container.NetworkSettings; ns != nil {
		if ep := ns.Networks[net]; ep != nil && ep.IPAddress.IsValid() {
			return ep.IPAddress
		}
	}
	t.Fatalf("testbed: container %s has no address on network %s", containerID, net)
	return netip.Addr{}
}

// ProxyUser is the user the proxy container runs as (nobody).
const ProxyUser = "65534:65534"

// RunProxy runs `dso-init proxy` in a container of image (any image: the
// static binary is bind-mounted at /.dso/init) on the network named net, as `docker dso
// up` runs it: as user 65534 with net.ipv4.ip_unprivileged_port_start=0 so
// it may listen below 1024, a tmpfs at /run/dso for its control socket, and
// each port ("LISTEN:TARGET") published on 127.0.0.1 at a port the engine
// picks (read it back with HostAddr(t, id, "LISTEN/tcp")). With net "host"
// it runs in the host's network namespace instead and listens on the
// host's LISTEN ports itself (above 1024: nothing is published, and the
// sysctl is the host's). New connections go to backend until the proxy is
// told otherwise; flags are more of `dso-init proxy`'s. It returns the ID.
func RunProxy(t testing.TB, image, net, backend string, ports []string, flags ...string) string {
	t.Helper()
	args := append([]string{"/.dso/init", "proxy", "--backend", backend}, flags...)
	exposed := network.PortSet{}
	published := network.PortMap{}
	for _, p := range ports {
		listen, _, _ := strings.Cut(p, ":")
		if _, err := strconv.Atoi(listen); err != nil {
			t.Fatalf("testbed: RunProxy: port %q is not LISTEN:TARGET", p)
		}
		args = append(args, "--port", p)
		port := network.MustParsePort(listen + "/tcp")
		exposed[port] = struct{}{}
		published[port] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1")}}
	}
	hc := &container.HostConfig{
		PortBindings: published,
		Sysctls:      map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
		Tmpfs:        map[string]string{"/run/dso": "uid=65534,gid=65534,mode=0700"},
		Mounts: []mount.Mount{{
			Type: mount.TypeBind, Source: GoBinary(t, "./cmd/dso-init"), Target: "/.dso/init", ReadOnly: true,
		}},
	}
	nc := OnNetwork(net)
	if net == "host" {
		exposed, hc.PortBindings, hc.Sysctls, hc.NetworkMode, nc = nil, nil, nil, "host", nil
	}
	return RunContainer(t, client.ContainerCreateOptions{
		Config: &container.Config{
			Image:        image,
			User:         ProxyUser,
			Entrypoint:   args,
			ExposedPorts: exposed,
		},
		HostConfig:       hc,
		NetworkingConfig: nc,
	})
}
