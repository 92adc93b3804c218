package rotate

import (
	"regexp"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
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
