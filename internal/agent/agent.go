// Package agent is the per-host daemon: it watches the Docker engine for
// managed containers that start (first start, `docker restart`, a crash
// under a restart policy, a daemon restart) and delivers their secrets to
// the init waiting inside them. It reconnects to the engine after it
// restarts and, on each (re)connection, serves the containers already
// running.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/deliver"
	"github.com/dso-project/dso/internal/resolve"
	"github.com/dso-project/dso/internal/secretref"
)

// Docker is the part of the engine client the agent uses.
type Docker interface {
	deliver.Docker
	Events(ctx context.Context, opts client.EventsListOptions) client.EventsResult
	ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error)
	ContainerInspect(ctx context.Context, id string, opts client.ContainerInspectOptions) (client.ContainerInspectResult, error)
}

// Providers returns the provider set for the dso.yaml at path ("" when the
// container was wired without one).
type Providers func(path string) (*resolve.Set, error)

// Options configure the agent.
type Options struct {
	Docker    Docker
	Providers Providers
	Log       *slog.Logger
	// Parallel bounds deliveries in flight (default 8).
	Parallel int
}

// Agent delivers secrets to managed containers.
type Agent struct {
	opts Options
	sem  chan struct{}
	wg   sync.WaitGroup
}

// New returns an agent; Run starts it.
func New(opts Options) *Agent {
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Agent{opts: opts, sem: make(chan struct{}, opts.Parallel)}
}

// Run serves until ctx is cancelled, reconnecting to the engine with backoff
// when the connection drops. A cancelled ctx is not an error.
func (a *Agent) Run(ctx context.Context) error {
	defer a.wg.Wait()
	backoff := 250 * time.Millisecond
	for {
		start := time.Now()
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 30*time.Second {
			backoff = 250 * time.Millisecond
		}
		a.opts.Log.Warn("lost the Docker engine event stream; reconnecting", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// session subscribes to container starts, then serves the containers that
// already run, then follows the stream until it fails.
func (a *Agent) session(ctx context.Context) error {
	f := client.Filters{}.Add("type", "container").Add("event", "start").Add("label", compose.LabelManaged+"=true")
	ev := a.opts.Docker.Events(ctx, client.EventsListOptions{Filters: f})

	list, err := a.opts.Docker.ContainerList(ctx, client.ContainerListOptions{
		Filters: client.Filters{}.Add("label", compose.LabelManaged+"=true").Add("status", "running"),
	})
	if err != nil {
		return fmt.Errorf("list managed containers: %w", err)
	}
	a.opts.Log.Info("connected to the Docker engine", "running_managed_containers", len(list.Items))
	for _, c := range list.Items {
		a.spawn(ctx, c.ID)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-ev.Err:
			if err == nil {
				err = errors.New("event stream closed")
			}
			return err
		case m := <-ev.Messages:
			a.spawn(ctx, m.Actor.ID)
		}
	}
}

func (a *Agent) spawn(ctx context.Context, id string) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		select {
		case a.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-a.sem }()
		if err := a.Deliver(ctx, id); err != nil && ctx.Err() == nil {
			a.opts.Log.Error("delivery failed", "container", shortID(id), "error", err)
		}
	}()
}

// Deliver resolves the references of container id and hands the values to
// its init.
func (a *Agent) Deliver(ctx context.Context, id string) error {
	ins, err := a.opts.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	c := ins.Container
	if c.State == nil || !c.State.Running {
		return nil
	}
	values, err := a.values(ctx, c)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := deliver.Send(dctx, a.opts.Docker, id, deliver.NewPayload(values, "")); err != nil {
		return err
	}
	a.opts.Log.Info("delivered secrets", "container", shortID(id), "name", c.Name, "service", c.Config.Labels["com.docker.compose.service"], "variables", len(values))
	return nil
}

// values resolves what container c must receive.
func (a *Agent) values(ctx context.Context, c container.InspectResponse) ([]deliver.Value, error) {
	refs, err := compose.RefsFromLabels(c.Config.Labels)
	if err != nil {
		return nil, err
	}
	set, err := a.opts.Providers(c.Config.Labels[compose.LabelConfig])
	if err != nil {
		return nil, err
	}
	list := make([]secretref.Ref, 0, len(refs))
	vars := make([]string, 0, len(refs))
	for v, r := range refs {
		vars = append(vars, v)
		list = append(list, r)
	}
	got, err := set.Fetch(ctx, list)
	if err != nil {
		return nil, err
	}
	sort.Strings(vars)
	values := make([]deliver.Value, 0, len(vars))
	for _, v := range vars {
		r := refs[v]
		values = append(values, deliver.Value{Var: v, File: r.File, Data: got[r].Value})
	}
	return values, nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
