package rotate

import (
	"context"
	"fmt"
	"strings"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/backoff"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
)

// LabelSignal names the signal of the signal strategy on a container.
const LabelSignal = "dso.update.signal"

// Decision is what a secret change does to one container.
type Decision struct {
	Strategy Strategy
	Signal   string // for Signal
}

// Decide picks a container's strategy from its labels and the dso.yaml it
// was wired with (nil when none): the dso.update.strategy label, else the
// rotation of a dso.yaml secret it names in dso.secrets, else the defaults
// of dso.yaml, else rolling.
func Decide(labels map[string]string, cfg *config.Config) (Decision, error) {
	strategy, signal := Strategy(labels[compose.LabelStrategy]), labels[LabelSignal]
	if cfg != nil {
		for _, name := range strings.Split(labels[compose.LabelSecrets], ",") {
			for _, s := range cfg.Secrets {
				if s.Name != strings.TrimSpace(name) {
					continue
				}
				if strategy == "" && !s.Rotation.Enabled {
					strategy = None
				}
				strategy = first2(strategy, s.Rotation.Strategy)
				signal = first(signal, s.Rotation.Signal)
			}
		}
		if strategy == "" && !cfg.Defaults.Rotation.Enabled {
			strategy = None
		}
		strategy = first2(strategy, cfg.Defaults.Rotation.Strategy)
		signal = first(signal, cfg.Defaults.Rotation.Signal)
	}
	s, err := ParseStrategy(string(first2(strategy, config.DefaultStrategy)))
	return Decision{Strategy: s, Signal: first(signal, config.DefaultSignal)}, err
}

func first2(a, b Strategy) Strategy {
	if a != "" {
		return a
	}
	return b
}

// Rotate applies d to the container of job: nothing (none), new files and
// a signal (signal), or a replacement (restart, rolling), retried with
// backoff (3 attempts, the waits from RetryBackoff, jittered, on the
// Replacer's clock) while the old container keeps serving. envChanged
// names the changed secrets that the container holds as environment
// variables, which a signal cannot change.
func (r *Replacer) Rotate(ctx context.Context, job Job, d Decision, envChanged []string) (string, error) {
	switch d.Strategy {
	case None:
		return "", nil
	case Signal:
		if err := r.Resignal(ctx, job.Old, d.Signal); err != nil {
			return "", err
		}
		if len(envChanged) > 0 {
			return "", fmt.Errorf("files rewritten and %s sent, but %s reach the application as environment variables, which a running process cannot change: use strategy rolling or restart for them", d.Signal, strings.Join(envChanged, ", "))
		}
		return job.Old, nil
	}
	job.Strategy = d.Strategy
	if err := r.replaceable(ctx, job.Old); err != nil {
		return "", err
	}
	if job.Replacing != nil {
		job.Replacing()
	}
	first := r.retryBackoff()
	b := backoff.New(r.clock(), first, 4*first)
	for attempt := 1; ; attempt++ {
		newID, err := r.Replace(ctx, job)
		if err == nil || err == ErrInterrupted || err == ErrRemoved {
			return newID, err
		}
		if _, ierr := r.Docker.ContainerInspect(ctx, job.Old, client.ContainerInspectOptions{}); notFound(ierr) {
			// Removed while the new one was being tried: the swap was
			// undone, and there is nothing left to rotate.
			r.log().Info("the container was removed during its rotation; nothing to rotate", "container", short(job.Old), "error", err)
			return "", ErrRemoved
		}
		r.log().Warn("rotation failed; the old container serves", "container", short(job.Old), "strategy", d.Strategy, "attempt", attempt, "error", err)
		if attempt == 3 {
			return "", fmt.Errorf("after 3 attempts: %w", err)
		}
		if b.Wait(ctx) != nil {
			return "", ErrInterrupted
		}
	}
}
