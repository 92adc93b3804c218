package agent

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/rotate"
	"github.com/dso-project/dso/internal/state"
)

// journal is where rotations are journaled: the state store, or nowhere
// when the agent runs without one.
type journal interface {
	BeginRotation(r state.Rotation) (uint64, error)
	UpdateRotation(id uint64, fn func(*state.Rotation)) error
	FinishRotation(id uint64, newContainer, result, errText string, at time.Time) error
	Unfinished() ([]state.Rotation, error)
}

func (a *Agent) journal() journal {
	if a.opts.Store == nil {
		return noJournal{}
	}
	return a.opts.Store
}

type noJournal struct{}

func (noJournal) BeginRotation(state.Rotation) (uint64, error)       { return 0, nil }
func (noJournal) UpdateRotation(uint64, func(*state.Rotation)) error { return nil }
func (noJournal) FinishRotation(uint64, string, string, string, time.Time) error {
	return nil
}
func (noJournal) Unfinished() ([]state.Rotation, error) { return nil, nil }

// rotateTracked runs a rotation under the rotations' context, counted so
// that a stopping agent lets it finish.
func (a *Agent) rotateTracked(id string, keys []string) {
	a.rotationsWG.Add(1)
	defer a.rotationsWG.Done()
	if a.rctx.Err() != nil {
		return
	}
	a.rotate(a.rctx, id, keys)
}

// inflight marks journal entry id as being worked on by this agent.
func (a *Agent) inflight(id uint64, on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if on {
		a.running[id] = true
	} else {
		delete(a.running, id)
	}
}

// reconcile finishes or undoes the rotations that an earlier agent (or an
// earlier engine session of this one) left unfinished, removes temporary
// containers no journal entry explains, and points each proxy at its
// service. It runs when the agent connects to the engine, before it serves
// anything.
func (a *Agent) reconcile(ctx context.Context) {
	unfinished, err := a.journal().Unfinished()
	if err != nil {
		a.opts.Log.Error("could not read the rotation journal", "error", err)
	}
	for _, r := range unfinished {
		a.mu.Lock()
		mine := a.running[r.ID]
		a.mu.Unlock()
		if mine {
			continue
		}
		rec, err := a.replacer.Recover(ctx, r)
		if err != nil {
			a.opts.Log.Error("could not recover an unfinished rotation; will try again", "rotation", r.ID, "service", r.Service, "step", r.Step, "error", err)
			continue
		}
		result := metrics.ResultFailure
		if rec.Completed {
			result = metrics.ResultSuccess
		}
		a.journal().UpdateRotation(r.ID, func(e *state.Rotation) {
			e.Result, e.Recovery, e.Finished = result, rec.Note, time.Now()
			if rec.Completed {
				e.NewContainer = rec.Container
			} else {
				e.Error = "the agent stopped during the rotation; undone, and tried again"
			}
		})
		a.opts.Log.Info("recovered an unfinished rotation", "rotation", r.ID, "service", r.Service, "step", r.Step, "recovery", rec.Note, "container", shortID(rec.Container))
		a.emit(events.Event{Type: events.TypeRotation, Service: r.Service, Container: shortID(rec.Container), Strategy: r.Strategy, Result: result, Message: rec.Note})
	}
	mine := client.Filters{}.Add("label", compose.LabelManaged+"=true", compose.LabelAgent+"="+a.opts.ID)
	notes, err := a.replacer.Sweep(ctx, mine, func(id uint64) bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.running[id]
	})
	for _, n := range notes {
		a.opts.Log.Info("cleaned up after an earlier agent", "action", n)
	}
	if err != nil {
		a.opts.Log.Error("could not clean up leftover containers", "error", err)
	}
	a.resetProxies(ctx)
}

// resetProxies points the proxy of every service with no rotation in
// flight at the service itself.
func (a *Agent) resetProxies(ctx context.Context) {
	if a.opts.Proxy == nil {
		return
	}
	f := client.Filters{}.Add("label", compose.LabelAgent+"="+a.opts.ID).Add("label", rotate.LabelProxyFor).Add("status", "running")
	list, err := a.opts.Docker.ContainerList(ctx, client.ContainerListOptions{Filters: f})
	if err != nil {
		a.opts.Log.Warn("could not list the proxies", "error", err)
		return
	}
	for _, p := range list.Items {
		// A rotation in flight here owns its proxy's backend.
		lock := a.serviceLock(p.Labels["com.docker.compose.project"], p.Labels[rotate.LabelProxyFor])
		if !lock.TryLock() {
			continue
		}
		err := a.opts.Proxy.Set(ctx, p.ID, []string{p.Labels[rotate.LabelProxyFor]})
		lock.Unlock()
		if err != nil {
			a.opts.Log.Warn("could not point the proxy at its service", "proxy", shortID(p.ID), "error", err)
		}
	}
}

// crashPoint returns the test-only hook that kills the agent with SIGKILL
// when a rotation of the given "strategy:step" is about to take that step.
func crashPoint(at string) func(rotate.Strategy, string) {
	if at == "" {
		return nil
	}
	return func(s rotate.Strategy, step string) {
		if string(s)+":"+step == at {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}
