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
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/notify"
	"github.com/dso-project/dso/internal/rotate"
	"github.com/dso-project/dso/internal/state"
)

// LabelSignal names the signal of the signal strategy on a container.
const LabelSignal = "dso.update.signal"

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
				for k := range h.versions {
					if changed[k] {
						affected[id] = append(affected[id], k)
					}
				}
			}
			a.mu.Unlock()
			for id, keys := range affected {
				sort.Strings(keys)
				a.spawn(ctx, func(ctx context.Context) { a.rotate(ctx, id, keys) })
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

// rotate applies the strategy of container id for the changed keys.
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

	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = keyName(k)
	}
	strategy, signal, serr := a.strategyFor(c)
	if serr != nil {
		strategy = "invalid"
	}
	var journal uint64
	if a.opts.Store != nil {
		journal, _ = a.opts.Store.BeginRotation(state.Rotation{Service: project + "/" + service, Secrets: names, OldContainer: id, Strategy: strategy, Started: time.Now(), Result: "running"})
	}
	start := time.Now()
	newID := ""
	err = serr
	if err == nil {
		newID, err = a.apply(ctx, c, id, strategy, signal, keys)
	}
	result := metrics.ResultSuccess
	errText := ""
	level := "INFO"
	if err != nil {
		result, errText, level = metrics.ResultFailure, err.Error(), "ERROR"
	}
	if a.opts.Store != nil && journal != 0 {
		a.opts.Store.FinishRotation(journal, newID, result, errText, time.Now())
	}
	a.metric(func(m *metrics.Metrics) { m.ObserveRotation(strategy, result, time.Since(start)) })
	msg := fmt.Sprintf("rotation (%s) for %s", strategy, strings.Join(names, ", "))
	if err != nil {
		msg += ": " + errText
		a.opts.Log.Error("rotation failed", "container", shortID(id), "service", service, "strategy", strategy, "error", err)
	} else {
		a.opts.Log.Info("rotated", "container", shortID(id), "new_container", shortID(newID), "service", service, "strategy", strategy)
	}
	a.emit(events.Event{Type: events.TypeRotation, Level: level, Project: project, Service: service, Container: shortID(id), Strategy: strategy, Result: result, Message: msg,
		Attrs: map[string]string{"new_container": shortID(newID)}})
	if a.opts.Notify != nil {
		event := notify.EventRotationSucceeded
		if err != nil {
			event = notify.EventRotationFailed
		}
		a.opts.Notify(notify.Notification{Event: event, Time: time.Now(), RotationID: journal, Project: project, Service: service, Secrets: names,
			Strategy: strategy, OldContainer: shortID(id), NewContainer: shortID(newID), Error: errText})
	}
}

// apply runs one strategy, with retries for restart.
func (a *Agent) apply(ctx context.Context, c container.InspectResponse, id, strategy, signal string, keys []string) (string, error) {
	switch strategy {
	case rotate.None:
		return "", nil
	case rotate.Signal:
		a.mu.Lock()
		var envChanged []string
		if h := a.held[id]; h != nil {
			for _, k := range keys {
				if h.envKeys[k] {
					envChanged = append(envChanged, keyName(k))
				}
			}
		}
		a.mu.Unlock()
		if err := a.deliver(ctx, id, signal); err != nil {
			return "", err
		}
		if len(envChanged) > 0 {
			return "", fmt.Errorf("files rewritten and %s sent, but %s reach the application as environment variables, which a running process cannot change: use strategy restart for them", signal, strings.Join(envChanged, ", "))
		}
		return id, nil
	case rotate.Restart:
		// Should the old container be stopped and brought back, it gets the
		// values it had, not the new ones that may be what fails; it keeps
		// them until a rotation replaces it.
		a.mu.Lock()
		a.pinned[id] = true
		a.mu.Unlock()
		health := a.opts.HealthTimeout
		r := &rotate.Restarter{Docker: a.opts.Docker, Deliver: a.Deliver, HealthTimeout: health, Log: a.opts.Log}
		backoff := a.opts.RetryBackoff
		var err error
		for attempt := 1; attempt <= 3; attempt++ {
			var newID string
			if newID, err = r.Restart(ctx, id); err == nil {
				return newID, nil
			}
			a.opts.Log.Warn("restart rotation failed; the old container serves", "container", shortID(id), "attempt", attempt, "error", err)
			if attempt == 3 {
				break
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(backoff):
			}
			backoff *= 2
		}
		return "", fmt.Errorf("after 3 attempts: %w", err)
	}
	return "", errors.New("unknown strategy " + strategy)
}

// strategyFor picks a container's strategy: its dso.update.strategy label,
// else the rotation of a dso.yaml secret it names in dso.secrets, else the
// defaults of dso.yaml, else restart.
func (a *Agent) strategyFor(c container.InspectResponse) (string, string, error) {
	labels := c.Config.Labels
	strategy, signal := labels[compose.LabelStrategy], labels[LabelSignal]
	cfg, err := a.opts.Configs(a.projects.config(labels["com.docker.compose.project"]))
	if err == nil && cfg != nil {
		for _, name := range strings.Split(labels[compose.LabelSecrets], ",") {
			for _, s := range cfg.Secrets {
				if s.Name == strings.TrimSpace(name) {
					if !s.Rotation.Enabled && strategy == "" {
						strategy = rotate.None
					}
					if strategy == "" {
						strategy = string(s.Rotation.Strategy)
					}
					if signal == "" {
						signal = s.Rotation.Signal
					}
				}
			}
		}
		if strategy == "" {
			if !cfg.Defaults.Rotation.Enabled {
				strategy = rotate.None
			} else {
				strategy = string(cfg.Defaults.Rotation.Strategy)
			}
		}
		if signal == "" {
			signal = cfg.Defaults.Rotation.Signal
		}
	}
	if strategy == "" {
		strategy = rotate.Restart
	}
	if signal == "" {
		signal = "SIGHUP"
	}
	s, err := rotate.ParseStrategy(strategy)
	return s, signal, err
}
