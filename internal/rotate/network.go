package rotate

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/compose"
)

var shortIDAlias = regexp.MustCompile(`^[0-9a-f]{12}$`)

// endpoints splits the old container's networks into the one given at
// create (the engine takes one there on API 1.41) and the others, to
// connect before start. Aliases keep what compose set (the service name),
// less the old container's short ID.
func endpoints(old container.InspectResponse) (map[string]*network.EndpointSettings, *network.NetworkingConfig) {
	rest := map[string]*network.EndpointSettings{}
	var first *network.NetworkingConfig
	if old.NetworkSettings == nil {
		return rest, nil
	}
	mode := ""
	if old.HostConfig != nil {
		mode = string(old.HostConfig.NetworkMode)
	}
	for name, ep := range old.NetworkSettings.Networks {
		if ep == nil {
			continue
		}
		var aliases []string
		for _, a := range ep.Aliases {
			if !shortIDAlias.MatchString(a) {
				aliases = append(aliases, a)
			}
		}
		cfg := &network.EndpointSettings{IPAMConfig: ep.IPAMConfig, Links: ep.Links, Aliases: aliases, DriverOpts: ep.DriverOpts}
		if first == nil && (name == mode || mode == "" || mode == "default") {
			first = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{name: cfg}}
			continue
		}
		rest[name] = cfg
	}
	if first == nil {
		for name, cfg := range rest {
			first = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{name: cfg}}
			delete(rest, name)
			break
		}
	}
	return rest, first
}

// newConfig is the old container's configuration for its replacement.
// A container that joins another's network namespace (compose's
// network_mode "service:NAME") takes its hostname and ports from it: the
// engine refuses them at create, and fills in the ones inspect shows (the
// hostname, the image's exposed ports). A hostname the engine gave (the old
// container's short ID) is left for the engine to give again.
func newConfig(old container.InspectResponse) *container.Config {
	cfg := *old.Config
	if old.HostConfig != nil && old.HostConfig.NetworkMode.IsContainer() {
		cfg.Hostname, cfg.Domainname, cfg.ExposedPorts = "", "", nil
	} else if len(old.ID) >= 12 && cfg.Hostname == old.ID[:12] {
		cfg.Hostname = ""
	}
	return &cfg
}

// checkJoiners fails when other containers of the project share a
// namespace of container id (compose's network_mode, pid or ipc
// "service:NAME", which the engine records as "container:ID"): a
// replacement would leave them in the namespaces of a removed container,
// cut off from the network or killed with its processes.
func (r *Replacer) checkJoiners(ctx context.Context, id string) error {
	ins, err := r.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	project := ins.Container.Config.Labels[labelProject]
	if project == "" {
		return nil
	}
	list, err := r.Docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", labelProject+"="+project)})
	if err != nil {
		return err
	}
	mode := "container:" + ins.Container.ID
	var joiners []string
	for _, c := range list.Items {
		if c.ID == ins.Container.ID {
			continue
		}
		other, err := r.Docker.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			if notFound(err) {
				continue
			}
			return err
		}
		hc := other.Container.HostConfig
		if hc == nil {
			continue
		}
		var shared []string
		for kind, m := range map[string]string{"network_mode": string(hc.NetworkMode), "pid": string(hc.PidMode), "ipc": string(hc.IpcMode)} {
			if m == mode {
				shared = append(shared, kind)
			}
		}
		if len(shared) > 0 {
			slices.Sort(shared)
			joiners = append(joiners, fmt.Sprintf("%s (%s)", strings.TrimPrefix(other.Container.Name, "/"), strings.Join(shared, ", ")))
		}
	}
	if len(joiners) == 0 {
		return nil
	}
	slices.Sort(joiners)
	return fmt.Errorf("%s share the namespaces of this container, which a replacement would remove from under them: give service %q strategy signal or none (label %s)",
		strings.Join(joiners, ", "), ins.Container.Config.Labels[labelService], compose.LabelStrategy)
}
