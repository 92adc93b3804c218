package agent

import (
	"context"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/swarm/driver"
)

// swarmInfo is the part of the engine client that tells a Swarm manager.
type swarmInfo interface {
	Info(ctx context.Context, opts client.InfoOptions) (client.SystemInfoResult, error)
}

// managerCheckInterval is how often the agent asks its engine whether it
// has become a Swarm manager.
const managerCheckInterval = 15 * time.Second

// swarmDriver is the daemon component that serves the Swarm secret driver
// at path once the engine is a Swarm manager (docker info:
// Swarm.ControlAvailable), from the providers of the agent's own dso.yaml.
// A socket that cannot be made fails the component, which the daemon
// reports as degraded and starts again.
func swarmDriver(engine swarmInfo, clk clock.Clock, d *driver.Driver, path string) component {
	return component{name: "Swarm secret driver", run: func(ctx context.Context) error {
		if !untilManager(ctx, engine, clk) {
			return nil
		}
		return d.Run(ctx, path)
	}}
}

// untilManager waits until the engine is a Swarm manager (true), or ctx
// ends (false).
func untilManager(ctx context.Context, engine swarmInfo, clk clock.Clock) bool {
	for {
		info, err := engine.Info(ctx, client.InfoOptions{})
		if err == nil && info.Info.Swarm.ControlAvailable {
			return true
		}
		if clock.Sleep(ctx, clk, managerCheckInterval) != nil {
			return false
		}
	}
}

// swarmResolver resolves a Swarm secret's reference with the providers of
// the agent's own dso.yaml (the local vault at its default place without
// one). Like a delivery, it keeps what it got in the cache of
// last-known-good values, and serves from it while the provider is down.
func (a *Agent) swarmResolver(providers *ProviderCache) driver.Resolver {
	return func(ctx context.Context, ref secretref.Ref) ([]byte, error) {
		set, err := providers.Get("")
		if err != nil {
			return nil, err
		}
		got, err := set.Fetch(ctx, []secretref.Ref{ref})
		h := &holding{}
		if err != nil {
			if err := a.fromCache(set, h, got, err); err != nil {
				return nil, err
			}
			return got[ref].Value, nil
		}
		if a.cache != nil {
			res := got[ref]
			if err := a.cache.Put(watchKey("", res.Provider, ref.Path), ref.Key, res.Value, res.Version); err != nil {
				a.opts.Log.Warn("could not keep a value in the cache", "ref", ref.String(), "error", err)
			}
		}
		return got[ref].Value, nil
	}
}
