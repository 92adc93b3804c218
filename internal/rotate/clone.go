package rotate

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/compose"
)

// What a replacement copies of the old container, and when there may be
// none.

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

// newHostConfig is the old container's host configuration for its
// replacement, with the old container's anonymous volumes (a service's
// `volumes: ["/data"]`, an image's VOLUME) as its own, as compose keeps
// them when it recreates a container: left out, each would be a new, empty
// volume, and the data would stay behind in the old one.
func newHostConfig(old container.InspectResponse) *container.HostConfig {
	hc := *old.HostConfig
	hc.Mounts = slices.Clone(hc.Mounts)
	for _, m := range old.Mounts {
		if m.Type != mount.TypeVolume || m.Name == "" || bound(hc.Binds, m.Destination) {
			continue
		}
		i := slices.IndexFunc(hc.Mounts, func(hm mount.Mount) bool { return path.Clean(hm.Target) == path.Clean(m.Destination) })
		switch {
		case i < 0:
			hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeVolume, Source: m.Name, Target: m.Destination, ReadOnly: !m.RW})
		case hc.Mounts[i].Type == mount.TypeVolume && hc.Mounts[i].Source == "":
			hc.Mounts[i].Source = m.Name
		}
	}
	return &hc
}

// anonymousName is the name the engine gives an anonymous volume.
var anonymousName = regexp.MustCompile(`^[0-9a-f]{64}$`)

// AnonymousVolumes lists the anonymous volumes (named by the engine)
// mounted by the containers of project. A replacement holds its
// predecessor's by name (newHostConfig), and the engine removes with a
// container only the volumes that were anonymous at its creation: `down
// -v` must remove these itself.
func AnonymousVolumes(ctx context.Context, docker interface {
	ContainerList(context.Context, client.ContainerListOptions) (client.ContainerListResult, error)
}, project string) ([]string, error) {
	list, err := docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", labelProject+"="+project)})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range list.Items {
		for _, m := range c.Mounts {
			if m.Type == mount.TypeVolume && anonymousName.MatchString(m.Name) && !slices.Contains(out, m.Name) {
				out = append(out, m.Name)
			}
		}
	}
	return out, nil
}

// bound reports whether binds ("SRC:DEST[:OPTIONS]") mount something at dest.
func bound(binds []string, dest string) bool {
	for _, b := range binds {
		parts := strings.Split(b, ":")
		if len(parts) >= 2 && path.Clean(parts[1]) == path.Clean(dest) {
			return true
		}
	}
	return false
}

// replaceable fails when container id must not be replaced: it is paused
// (its user stopped it for a while; a replacement would run), or other
// containers of the project share a namespace of it (compose's
// network_mode, pid or ipc "service:NAME", which the engine records as
// "container:ID"), which a replacement would leave in the namespaces of a
// removed container, cut off from the network or killed with its
// processes.
func (r *Replacer) replaceable(ctx context.Context, id string) error {
	ins, err := r.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if notFound(err) {
		return ErrRemoved
	}
	if err != nil {
		return err
	}
	if ins.Container.State != nil && ins.Container.State.Paused {
		return errors.New("the container is paused, and is not replaced while it is: once unpaused, it gets the new values at the next change, or now with docker dso up --force-recreate")
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
