// Package rotate decides and applies what a secret change does to a
// container, by the strategy chosen for it:
//
//   - none: nothing happens to the container;
//   - signal: the files in its tmpfs are rewritten, then the application gets
//     a signal; the container stays the same;
//   - restart: a new container with the same configuration replaces it; the
//     old one is stopped first when it holds host ports the new one needs;
//   - rolling (the default): a new container starts beside the old one,
//     gets its secrets and must be healthy before the service's proxy (the
//     container that owns its host ports) sends new connections to it; the
//     old one's connections drain, then it stops. A service with a writable
//     volume or bind mount never runs two writers: it rotates stop-first
//     while the proxy holds new connections.
//
// Every step of a replacement is written to the journal before it is
// taken, and every step can be taken twice without harm, so that an agent
// killed at any point finishes or undoes the rotation when it starts again
// (Recover). The commit point is the proxy's switch (restart: the new
// container being healthy): before it, recovery brings the old container
// back; after it, recovery finishes the swap. Values never pass through
// here: delivery is a callback.
package rotate

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/state"
)

// Strategy is config.Strategy: one type from dso.yaml to the rotation.
type Strategy = config.Strategy

// Strategy names.
const (
	None    = config.StrategyNone
	Signal  = config.StrategySignal
	Restart = config.StrategyRestart
	Rolling = config.StrategyRolling
)

// ParseStrategy checks a strategy name (a label's or dso.yaml's).
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(s); st {
	case None, Signal, Restart, Rolling:
		return st, nil
	}
	return "", fmt.Errorf("unknown strategy %q (use rolling, restart, signal or none)", s)
}

// Order says whether the new container starts before the old one stops.
type Order string

// Orders.
const (
	StartFirst Order = "start-first"
	StopFirst  Order = "stop-first"
)

// Docker is the part of the engine client a replacement uses.
type Docker interface {
	ContainerInspect(ctx context.Context, id string, opts client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error)
	ContainerCreate(ctx context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error)
	ContainerStart(ctx context.Context, id string, opts client.ContainerStartOptions) (client.ContainerStartResult, error)
	ContainerStop(ctx context.Context, id string, opts client.ContainerStopOptions) (client.ContainerStopResult, error)
	ContainerRemove(ctx context.Context, id string, opts client.ContainerRemoveOptions) (client.ContainerRemoveResult, error)
	ContainerRename(ctx context.Context, id string, opts client.ContainerRenameOptions) (client.ContainerRenameResult, error)
	NetworkConnect(ctx context.Context, networkID string, opts client.NetworkConnectOptions) (client.NetworkConnectResult, error)
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (client.ImageInspectResult, error)
}

// Proxy drives the proxy container of a service (internal/proxy), by its
// container ID. Backends are IP addresses or names the project network
// resolves.
type Proxy interface {
	// Set sends new connections to backends.
	Set(ctx context.Context, proxy string, backends []string) error
	// Hold makes new connections wait until the next Set.
	Hold(ctx context.Context, proxy string) error
	// Drain waits, at most timeout, until no connection to backend
	// remains, then closes the rest.
	Drain(ctx context.Context, proxy, backend string, timeout time.Duration) error
	// Probe connects to every proxied port of backend.
	Probe(ctx context.Context, proxy, backend string, timeout time.Duration) error
}

// Journal records each step before it is taken (the state store).
type Journal interface {
	UpdateRotation(id uint64, fn func(*state.Rotation)) error
}

// Replacer replaces containers (restart and rolling) and recovers
// replacements that an earlier agent left unfinished.
type Replacer struct {
	Docker  Docker
	Journal Journal
	// Proxy drives the proxies of rolling services; nil when none is known.
	Proxy Proxy
	// Deliver hands a started container its secrets: the current values to
	// a new container, the values it had to an old one brought back.
	Deliver func(ctx context.Context, id string) error
	// Defer, when set, holds the deliveries that a start of container id
	// would get (the engine's start event) until Deliver is called for it:
	// a stop-first replacement starts the new container while the old one
	// stops, and hands it its secrets only once the old one has stopped.
	Defer func(id string)
	// Resignal rewrites the files of a running container with the current
	// values and sends its application signal (the signal strategy).
	Resignal func(ctx context.Context, id, signal string) error
	// RetryBackoff is the first wait before retrying a failed replacement
	// (default 2s).
	RetryBackoff time.Duration
	// HealthTimeout bounds the wait for a new container to be healthy
	// (default 30s).
	HealthTimeout time.Duration
	// Settle is how long a container with no healthcheck and no port to
	// probe must keep running after delivery to count as started (2s).
	Settle time.Duration
	// DrainTimeout bounds the drain of the old container's connections
	// (default 30s).
	DrainTimeout time.Duration
	// BeforeStep, when set, is called after a step is journaled and before
	// it is taken (the agent's test-only crash point).
	BeforeStep func(strategy Strategy, step string)
	Log        *slog.Logger
	// Clock is the time source of every wait (the system clock when nil).
	Clock clock.Clock
}

func (r *Replacer) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// retryBackoff is the first wait before trying a failed replacement (or
// its undoing) again.
func (r *Replacer) retryBackoff() time.Duration {
	if r.RetryBackoff <= 0 {
		return 2 * time.Second
	}
	return r.RetryBackoff
}

func (r *Replacer) clock() clock.Clock {
	if r.Clock == nil {
		return clock.RealClock{}
	}
	return r.Clock
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
