package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/notify"
	"github.com/dso-project/dso/internal/rotate"
	"github.com/dso-project/dso/internal/state"
)

// rotations turns batches of changed secrets into one rotation per
// container that holds any of them.
func (a *Agent) rotations(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case batch := <-a.watcher.Changes():
			changed := map[string]bool{}
			for _, c := range batch {
				changed[c.Key] = true
				a.emit(events.Event{Type: events.TypeSecretChange, Secret: keyName(c.Key), Version: c.New, Message: "secret changed"})
				a.opts.Log.Info("secret changed", "secret", keyName(c.Key), "version", c.New)
			}
			a.mu.Lock()
			affected := map[string][]string{}
			for id, h := range a.held {
				for _, s := range h.secrets {
					if changed[s.key] {
						affected[id] = append(affected[id], s.key)
					}
				}
			}
			a.mu.Unlock()
			for id, keys := range affected {
				sort.Strings(keys)
				a.spawn(ctx, func(context.Context) { a.rotateTracked(id, keys) })
			}
		}
	}
}

// serviceLock serializes rotations of one compose service.
func (a *Agent) serviceLock(project, service string) *sync.Mutex {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := project + "/" + service
	m, ok := a.services[k]
	if !ok {
		m = &sync.Mutex{}
		a.services[k] = m
	}
	return m
}

// rotate applies the strategy of container id for the changed keys: rotate
// decides, the journal keeps each step, and what happened is reported
// (log, event, metrics, notification).
func (a *Agent) rotate(ctx context.Context, id string, keys []string) {
	ins, err := a.opts.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil || ins.Container.State == nil || !ins.Container.State.Running {
		return
	}
	c := ins.Container
	project, service := c.Config.Labels["com.docker.compose.project"], c.Config.Labels["com.docker.compose.service"]
	lock := a.serviceLock(project, service)
	lock.Lock()
	defer lock.Unlock()
	// A rotation of the service that ran meanwhile may have replaced it
	// (a second change while the first rotated): its replacement got the
	// values current at its delivery, and one holding an older version is
	// rotated on its own.
	if now, err := a.opts.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); err != nil || now.Container.State == nil || !now.Container.State.Running {
		return
	}

	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = keyName(k)
	}
	cfg, _ := a.opts.Configs(a.projects.config(project))
	d, err := rotate.Decide(c.Config.Labels, cfg)
	strategy := string(d.Strategy)
	if err != nil {
		strategy = "invalid"
	}
	journal, jerr := a.journal().BeginRotation(state.Rotation{Service: project + "/" + service, Secrets: names, OldContainer: id, Strategy: strategy, Started: time.Now()})
	if jerr != nil {
		a.opts.Log.Warn("could not journal the rotation", "container", shortID(id), "error", jerr)
	}
	a.inflight(journal, true)
	defer a.inflight(journal, false)
	start := time.Now()
	newID := ""
	if err == nil {
		if d.Strategy == rotate.Signal {
			a.journal().UpdateRotation(journal, func(r *state.Rotation) { r.Step = "resignal" })
		}
		// Should the old container be stopped and brought back, it gets the
		// values it had, not the new ones that may be what fails; one the
		// rotation refuses to replace (paused) keeps getting the current.
		pin := func() {
			a.mu.Lock()
			a.pinned[id] = true
			a.mu.Unlock()
		}
		newID, err = a.replacer.Rotate(ctx, rotate.Job{Journal: journal, Old: id, Replacing: pin}, d, a.envChanged(id, keys))
	}
	switch {
	case errors.Is(err, rotate.ErrInterrupted):
		a.opts.Log.Warn("rotation interrupted by the agent's stop; the next start finishes or undoes it", "container", shortID(id), "service", service, "strategy", strategy)
		return
	case errors.Is(err, rotate.ErrRemoved):
		// Not a failure to notify: the user took the container away.
		a.opts.Log.Info("rotation ended: the container was removed", "container", shortID(id), "service", service, "strategy", strategy)
		a.journal().FinishRotation(journal, "", state.ResultRemoved, err.Error(), time.Now())
		return
	}
	a.report(journal, c, strategy, names, newID, time.Since(start), err)
}

// envChanged names the keys of container id that it holds as environment
// variables.
func (a *Agent) envChanged(id string, keys []string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	if h := a.held[id]; h != nil {
		for _, k := range keys {
			if s, _ := h.find(k); s.env {
				out = append(out, keyName(k))
			}
		}
	}
	return out
}

// report records the outcome of rotation journal of container c.
func (a *Agent) report(journal uint64, c container.InspectResponse, strategy string, names []string, newID string, took time.Duration, err error) {
	id := c.ID
	project, service := c.Config.Labels["com.docker.compose.project"], c.Config.Labels["com.docker.compose.service"]
	result, errText := metrics.ResultSuccess, ""
	if err != nil {
		result, errText = metrics.ResultFailure, err.Error()
		a.opts.Log.Error("rotation failed", "container", shortID(id), "service", service, "strategy", strategy, "error", err)
	} else {
		a.opts.Log.Info("rotated", "container", shortID(id), "new_container", shortID(newID), "service", service, "strategy", strategy)
	}
	a.journal().FinishRotation(journal, newID, result, errText, time.Now())
	a.announce(notify.Notification{RotationID: journal, Project: project, Service: service, Secrets: names,
		Strategy: strategy, OldContainer: shortID(id), NewContainer: shortID(newID)}, "rotation", took, err)
}

// announce tells of a finished rotation, n (its event, time and error
// filled in here), in the metrics, as an event named what, and as a
// notification.
func (a *Agent) announce(n notify.Notification, what string, took time.Duration, err error) {
	result, level := metrics.ResultSuccess, "INFO"
	n.Event, n.Time = notify.EventRotationSucceeded, time.Now()
	msg := fmt.Sprintf("%s (%s) for %s", what, n.Strategy, strings.Join(n.Secrets, ", "))
	if err != nil {
		result, level = metrics.ResultFailure, "ERROR"
		n.Event, n.Error = notify.EventRotationFailed, err.Error()
		msg += ": " + n.Error
	}
	a.metric(func(m *metrics.Metrics) { m.ObserveRotation(n.Strategy, result, took) })
	var attrs map[string]string
	if n.NewContainer != "" {
		attrs = map[string]string{"new_container": n.NewContainer}
	}
	a.emit(events.Event{Type: events.TypeRotation, Level: level, Project: n.Project, Service: n.Service, Container: n.OldContainer,
		Strategy: n.Strategy, Result: result, Message: msg, Attrs: attrs})
	if a.opts.Notify != nil {
		a.opts.Notify(n)
	}
}
