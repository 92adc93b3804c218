// Package rotate applies a secret change to a container by the strategy
// chosen for it:
//
//   - none: nothing happens to the container;
//   - signal: the files in its tmpfs are rewritten, then the application gets
//     a signal; the container stays the same;
//   - restart: a new container with the same configuration replaces it. The
//     old one is kept (stopped only when it holds host ports the new one
//     needs) until the new one runs, has its secrets and is healthy; if the
//     new one fails, it is removed and the old one is back and serving.
//
// Values never pass through here: delivery is a callback.
package rotate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// Strategy names.
const (
	None    = "none"
	Signal  = "signal"
	Restart = "restart"
	Rolling = "rolling"
)

// ParseStrategy checks a strategy name; rolling is not supported yet.
func ParseStrategy(s string) (string, error) {
	switch s {
	case None, Signal, Restart:
		return s, nil
	case Rolling:
		return "", errors.New("strategy rolling is not supported yet (use restart, signal or none)")
	}
	return "", fmt.Errorf("unknown strategy %q (use restart, signal or none)", s)
}

// Docker is the part of the engine client a restart uses.
type Docker interface {
	ContainerInspect(ctx context.Context, id string, opts client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ContainerCreate(ctx context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error)
	ContainerStart(ctx context.Context, id string, opts client.ContainerStartOptions) (client.ContainerStartResult, error)
	ContainerStop(ctx context.Context, id string, opts client.ContainerStopOptions) (client.ContainerStopResult, error)
	ContainerRemove(ctx context.Context, id string, opts client.ContainerRemoveOptions) (client.ContainerRemoveResult, error)
	ContainerRename(ctx context.Context, id string, opts client.ContainerRenameOptions) (client.ContainerRenameResult, error)
	NetworkConnect(ctx context.Context, networkID string, opts client.NetworkConnectOptions) (client.NetworkConnectResult, error)
}

// Restarter replaces containers.
type Restarter struct {
	Docker Docker
	// Deliver hands a started container its secrets: the current values to
	// the new container, the values it had to the old one brought back.
	Deliver func(ctx context.Context, id string) error
	// HealthTimeout bounds the wait for a healthcheck to pass (default 30s).
	HealthTimeout time.Duration
	// Settle is how long a container without healthcheck must keep running
	// after delivery to count as started (default 2s).
	Settle time.Duration
	Log    *slog.Logger
}

// Restart replaces container id with a new one of the same configuration
// and returns the new one's ID. On failure the old container is serving
// again and the error says why the new one failed.
func (r *Restarter) Restart(ctx context.Context, id string) (string, error) {
	ins, err := r.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return "", err
	}
	old := ins.Container
	name := strings.TrimPrefix(old.Name, "/")
	tmpName := fmt.Sprintf("%s-dso-%d", name, time.Now().UnixNano()%1e9)
	holdsPorts := publishesHostPorts(old.HostConfig)

	nets, first := endpoints(old)
	created, err := r.Docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:             tmpName,
		Config:           old.Config,
		HostConfig:       old.HostConfig,
		NetworkingConfig: first,
	})
	if err != nil {
		return "", fmt.Errorf("create the new container: %w", err)
	}
	newID := created.ID
	fail := func(cause error) (string, error) {
		bg := context.WithoutCancel(ctx)
		r.Docker.ContainerRemove(bg, newID, client.ContainerRemoveOptions{Force: true})
		if holdsPorts {
			if _, err := r.Docker.ContainerStart(bg, id, client.ContainerStartOptions{}); err != nil {
				return "", fmt.Errorf("%w; and the old container did not start again: %v", cause, err)
			}
			if err := r.Deliver(bg, id); err != nil {
				return "", fmt.Errorf("%w; and the old container did not get its secrets again: %v", cause, err)
			}
		}
		return "", cause
	}
	for netName, ep := range nets {
		if _, err := r.Docker.NetworkConnect(ctx, netName, client.NetworkConnectOptions{Container: newID, EndpointConfig: ep}); err != nil {
			return fail(fmt.Errorf("connect the new container to %s: %w", netName, err))
		}
	}
	if holdsPorts {
		if _, err := r.Docker.ContainerStop(ctx, id, client.ContainerStopOptions{}); err != nil {
			return fail(fmt.Errorf("stop the old container to free its host ports: %w", err))
		}
	}
	if _, err := r.Docker.ContainerStart(ctx, newID, client.ContainerStartOptions{}); err != nil {
		return fail(fmt.Errorf("start the new container: %w", err))
	}
	if err := r.Deliver(ctx, newID); err != nil {
		return fail(fmt.Errorf("deliver to the new container: %w", err))
	}
	if err := r.waitHealthy(ctx, newID, old.Config.Healthcheck != nil && len(old.Config.Healthcheck.Test) > 0 && old.Config.Healthcheck.Test[0] != "NONE"); err != nil {
		return fail(err)
	}
	// The new one serves: retire the old one and take its name.
	bg := context.WithoutCancel(ctx)
	if _, err := r.Docker.ContainerRemove(bg, id, client.ContainerRemoveOptions{Force: true}); err != nil {
		r.log().Warn("could not remove the replaced container", "container", short(id), "error", err)
	}
	if _, err := r.Docker.ContainerRename(bg, newID, client.ContainerRenameOptions{NewName: name}); err != nil {
		r.log().Warn("could not give the new container its name", "container", short(newID), "name", name, "error", err)
	}
	return newID, nil
}

// waitHealthy waits until the new container is healthy (with a
// healthcheck) or has kept running for Settle (without).
func (r *Restarter) waitHealthy(ctx context.Context, id string, hasHealthcheck bool) error {
	timeout := r.HealthTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	settle := r.Settle
	if settle <= 0 {
		settle = 2 * time.Second
	}
	deadline := time.Now().Add(timeout)
	runningSince := time.Now()
	for {
		ins, err := r.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil {
			return err
		}
		st := ins.Container.State
		switch {
		case st == nil || !st.Running || st.Restarting:
			code := 0
			if st != nil {
				code = st.ExitCode
			}
			return fmt.Errorf("the new container stopped (exit code %d)", code)
		case hasHealthcheck && st.Health != nil && st.Health.Status == container.Unhealthy:
			return errors.New("the new container is unhealthy")
		case hasHealthcheck && st.Health != nil && st.Health.Status == container.Healthy:
			return nil
		case !hasHealthcheck && time.Since(runningSince) >= settle:
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the new container was not healthy within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (r *Restarter) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func publishesHostPorts(hc *container.HostConfig) bool {
	if hc == nil {
		return false
	}
	for _, bindings := range hc.PortBindings {
		if len(bindings) > 0 {
			return true
		}
	}
	return false
}

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

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
