package agent

import (
	"context"
	"time"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/notify"
	"github.com/dso-project/dso/internal/rotate"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/swarm"
)

// SwarmDocker is what the Swarm rotation needs of the engine.
type SwarmDocker interface {
	swarm.Docker
	swarmInfo
}

// swarmRotation returns the component that, on a Swarm manager, keeps the
// stacks' DSO secrets at their providers' versions (internal/swarm), once
// the engine is a Swarm manager (a node may be promoted later).
func (a *Agent) swarmRotation(docker SwarmDocker, providers *ProviderCache, cfg *config.Config, interval time.Duration) (*swarm.Rotator, func(context.Context) error) {
	r := &swarm.Rotator{
		Docker:   docker,
		Log:      a.opts.Log,
		Clock:    a.opts.Clock,
		Interval: interval,
		Version: func(ctx context.Context, ref secretref.Ref) (string, error) {
			set, err := providers.Get("")
			if err != nil {
				return "", err
			}
			p, _, err := set.Provider(ref)
			if err != nil {
				return "", err
			}
			return p.Version(ctx, ref.Path)
		},
		Strategy: func(labels map[string]string) (config.Strategy, error) {
			d, err := rotate.Decide(labels, cfg)
			return d.Strategy, err
		},
		Done: a.reportSwarm,
	}
	return r, func(ctx context.Context) error {
		if !untilManager(ctx, docker, a.opts.Clock) {
			return nil
		}
		a.swarmManager.Store(&docker)
		a.opts.Log.Info("Swarm manager: rotating the stacks' DSO secrets")
		return r.Run(ctx)
	}
}

// swarmStatus is the Swarm part of the status, on a manager.
func (a *Agent) swarmStatus(ctx context.Context) ([]api.SwarmService, error) {
	d := a.swarmManager.Load()
	if d == nil {
		return nil, nil
	}
	return swarm.Status(ctx, *d)
}

// reportSwarm logs, counts, publishes and notifies a finished Swarm
// rotation.
func (a *Agent) reportSwarm(r swarm.Rotation) {
	if r.Err != nil {
		a.opts.Log.Error("swarm rotation failed", "stack", r.Stack, "service", r.Service, "strategy", r.Strategy, "error", r.Err)
	} else {
		a.opts.Log.Info("swarm service rotated", "stack", r.Stack, "service", r.Service, "strategy", r.Strategy, "took", r.Took)
	}
	a.announce(notify.Notification{Project: r.Stack, Service: r.Service, Secrets: r.Secrets, Strategy: string(r.Strategy)}, "swarm rotation", r.Took, r.Err)
}
