package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/swarm/driver"
)

// Docker is the part of a Swarm manager's engine the rotator uses.
type Docker interface {
	SecretAPI
	SecretRemove(ctx context.Context, id string, opts client.SecretRemoveOptions) (client.SecretRemoveResult, error)
	ServiceList(ctx context.Context, opts client.ServiceListOptions) (client.ServiceListResult, error)
	ServiceInspect(ctx context.Context, id string, opts client.ServiceInspectOptions) (client.ServiceInspectResult, error)
	ServiceUpdate(ctx context.Context, id string, opts client.ServiceUpdateOptions) (client.ServiceUpdateResult, error)
	TaskList(ctx context.Context, opts client.TaskListOptions) (client.TaskListResult, error)
}

// Rotation is one finished rotation of one service, for the agent's
// reports.
type Rotation struct {
	Stack, Service string
	Secrets        []string // the references that changed
	Strategy       config.Strategy
	Err            error
	Took           time.Duration
}

// Rotator keeps the DSO secrets of a Swarm's services at their providers'
// current versions. Each pass it reads every DSO secret and the services
// that mount one, asks the provider for each reference's version, and for
// each service that mounts an older version: makes the secret of the new
// version, swaps it in (same target, owner and mode) with the update order
// of the service's strategy, and waits while Swarm rolls the tasks
// (rolling back on failure). Secrets that no service mounts any more and
// that a newer version replaced are removed.
type Rotator struct {
	Docker Docker
	// Version returns a reference's current version (never its value).
	Version func(ctx context.Context, ref secretref.Ref) (string, error)
	// Strategy decides a service's strategy from its container labels.
	Strategy func(labels map[string]string) (config.Strategy, error)
	// Done gets every finished rotation; optional.
	Done     func(Rotation)
	Log      *slog.Logger
	Clock    clock.Clock
	Interval time.Duration // between passes (30s)
	// UpdateTimeout bounds the wait for Swarm's rolling update (10m).
	UpdateTimeout time.Duration

	kick   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	failed map[string]retry // service ID + version set -> when to try again
}

type retry struct {
	at   time.Time
	wait time.Duration
}

func (r *Rotator) init() {
	r.once.Do(func() {
		r.kick = make(chan struct{}, 1)
		r.failed = map[string]retry{}
		if r.Clock == nil {
			r.Clock = clock.RealClock{}
		}
		if r.Log == nil {
			r.Log = slog.New(slog.DiscardHandler)
		}
		if r.Interval <= 0 {
			r.Interval = 30 * time.Second
		}
		if r.UpdateTimeout <= 0 {
			r.UpdateTimeout = 10 * time.Minute
		}
	})
}

// Trigger asks for a pass now (a webhook, the local vault file changed).
func (r *Rotator) Trigger() {
	r.init()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run makes a pass at once, then every Interval or Trigger, until ctx ends.
func (r *Rotator) Run(ctx context.Context) error {
	r.init()
	for {
		if err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("swarm rotation pass failed", "err", err)
		}
		t := r.Clock.TimerAt(r.Clock.Now().Add(r.Interval))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-r.kick:
			t.Stop()
		case <-t.C():
		}
	}
}

// Pass brings every service to its secrets' current versions once. Services
// rotate concurrently; each waits for its own rolling update.
func (r *Rotator) Pass(ctx context.Context) error {
	r.init()
	secrets, err := r.secrets(ctx)
	if err != nil {
		return err
	}
	services, err := r.Docker.ServiceList(ctx, client.ServiceListOptions{})
	if err != nil {
		return fmt.Errorf("listing services: %w", err)
	}
	versions := map[secretref.Ref]string{}
	var (
		errs []error
		emu  sync.Mutex // errs, appended by the rotations too
		wg   sync.WaitGroup
	)
	fail := func(err error) {
		emu.Lock()
		errs = append(errs, err)
		emu.Unlock()
	}
	for _, svc := range services.Items {
		changes := map[string]Secret{} // old name -> new secret
		for _, ref := range secretRefs(svc.Spec) {
			old, ok := secrets[ref.SecretName]
			if !ok {
				continue
			}
			v, seen := versions[old.Ref]
			if !seen {
				if v, err = r.Version(ctx, old.Ref); err != nil {
					fail(fmt.Errorf("service %s: %w", svc.Spec.Name, err))
					versions[old.Ref] = ""
					continue
				}
				versions[old.Ref] = v
			}
			if v != "" && v != old.Version {
				changes[old.Name] = NewSecret(old.Stack, old.Ref, v)
			}
		}
		if len(changes) == 0 || !r.due(svc.ID, changes) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.rotate(ctx, svc, changes); err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	if err := r.prune(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// secretRefs are the secrets a service's containers mount (none for a
// service that runs no container, e.g. a plugin).
func secretRefs(spec swarm.ServiceSpec) []*swarm.SecretReference {
	if spec.TaskTemplate.ContainerSpec == nil {
		return nil
	}
	return spec.TaskTemplate.ContainerSpec.Secrets
}

// secrets are the DSO secrets of the swarm by name.
func (r *Rotator) secrets(ctx context.Context) (map[string]Secret, error) {
	list, err := r.Docker.SecretList(ctx, client.SecretListOptions{Filters: make(client.Filters).Add("label", driver.LabelStack)})
	if err != nil {
		return nil, fmt.Errorf("listing secrets: %w", err)
	}
	out := map[string]Secret{}
	for _, s := range list.Items {
		if sec, ok := FromSpec(s.Spec); ok {
			out[sec.Name] = sec
		}
	}
	return out, nil
}

// key names a service's wanted change for the retry bookkeeping.
func key(serviceID string, changes map[string]Secret) string {
	names := make([]string, 0, len(changes))
	for _, s := range changes {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	return fmt.Sprint(serviceID, names)
}

// due reports whether a change may be tried now: a change that failed
// waits 5s, then twice as long after each failure, up to 5 minutes.
func (r *Rotator) due(serviceID string, changes map[string]Secret) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.failed[key(serviceID, changes)]
	return !ok || !r.Clock.Now().Before(f.at)
}

func (r *Rotator) record(serviceID string, changes map[string]Secret, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key(serviceID, changes)
	if err == nil {
		delete(r.failed, k)
		return
	}
	f := r.failed[k]
	f.wait = min(max(2*f.wait, 5*time.Second), 5*time.Minute)
	f.at = r.Clock.Now().Add(f.wait)
	r.failed[k] = f
}

// rotate swaps the new secrets into one service and waits for its update.
func (r *Rotator) rotate(ctx context.Context, svc swarm.Service, changes map[string]Secret) (err error) {
	start := r.Clock.Now()
	stack := svc.Spec.Labels[driver.LabelStack]
	var refs []string
	for _, s := range changes {
		refs = append(refs, s.Ref.String())
	}
	sort.Strings(refs)
	strategy, err := r.Strategy(svc.Spec.TaskTemplate.ContainerSpec.Labels)
	if err == nil && strategy == config.StrategySignal {
		err = fmt.Errorf("strategy signal cannot change a Swarm secret (a task's secrets are fixed when it starts): use rolling, restart or none")
	}
	defer func() {
		r.record(svc.ID, changes, err)
		if err != nil {
			err = fmt.Errorf("service %s: %w", svc.Spec.Name, err)
		}
		// A stopping agent leaves the update to Swarm and the next pass.
		if r.Done != nil && strategy != config.StrategyNone && ctx.Err() == nil {
			r.Done(Rotation{Stack: stack, Service: svc.Spec.Name, Secrets: refs, Strategy: strategy, Err: err, Took: r.Clock.Now().Sub(start)})
		}
	}()
	if err != nil || strategy == config.StrategyNone {
		return err
	}
	ids := map[string]string{}
	for _, s := range changes {
		if ids[s.Name], err = Ensure(ctx, r.Docker, s); err != nil {
			return err
		}
	}
	// Read the service again: its version must be the one updated.
	cur, err := r.Docker.ServiceInspect(ctx, svc.ID, client.ServiceInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspecting: %w", err)
	}
	spec := cur.Service.Spec
	refsNew := make([]*swarm.SecretReference, 0, len(spec.TaskTemplate.ContainerSpec.Secrets))
	for _, ref := range spec.TaskTemplate.ContainerSpec.Secrets {
		if s, ok := changes[ref.SecretName]; ok {
			c := *ref
			c.SecretID, c.SecretName = ids[s.Name], s.Name
			ref = &c
		}
		refsNew = append(refsNew, ref)
	}
	spec.TaskTemplate.ContainerSpec.Secrets = refsNew
	spec.UpdateConfig = updateConfig(spec, strategy)
	r.Log.Info("swarm rotation", "service", spec.Name, "secrets", refs, "strategy", strategy, "order", spec.UpdateConfig.Order)
	if _, err := r.Docker.ServiceUpdate(ctx, svc.ID, client.ServiceUpdateOptions{Version: cur.Service.Version, Spec: spec}); err != nil {
		return fmt.Errorf("updating: %w", err)
	}
	return r.wait(ctx, svc.ID)
}

// updateConfig is the service's own update_config with the order of its
// strategy: start-first for rolling where two tasks may run side by side
// (no host-mode published port, which a second task on the node could not
// bind, and no mount a second writer could share), else stop-first; a
// failed update rolls back unless the service says otherwise.
func updateConfig(spec swarm.ServiceSpec, strategy config.Strategy) *swarm.UpdateConfig {
	uc := swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback}
	if spec.UpdateConfig != nil {
		uc = *spec.UpdateConfig
		if uc.FailureAction == "" || uc.FailureAction == swarm.UpdateFailureActionPause {
			uc.FailureAction = swarm.UpdateFailureActionRollback
		}
	}
	uc.Order = swarm.UpdateOrderStopFirst
	if strategy == config.StrategyRolling && !pinned(spec) {
		uc.Order = swarm.UpdateOrderStartFirst
	}
	return &uc
}

// pinned reports whether a service's tasks cannot run twice on one node:
// a host-mode published port, or a volume or bind mount that is not
// read-only.
func pinned(spec swarm.ServiceSpec) bool {
	if spec.EndpointSpec != nil {
		for _, p := range spec.EndpointSpec.Ports {
			if p.PublishMode == swarm.PortConfigPublishModeHost && p.PublishedPort != 0 {
				return true
			}
		}
	}
	for _, m := range spec.TaskTemplate.ContainerSpec.Mounts {
		if !m.ReadOnly && m.Type != "tmpfs" && m.Target != "/.dso/init" {
			return true
		}
	}
	return false
}

// SecretAPI is the part of the engine that makes secrets.
type SecretAPI interface {
	SecretList(ctx context.Context, opts client.SecretListOptions) (client.SecretListResult, error)
	SecretCreate(ctx context.Context, opts client.SecretCreateOptions) (client.SecretCreateResult, error)
}

// Ensure makes the secret s unless it exists, and returns its ID.
func Ensure(ctx context.Context, docker SecretAPI, s Secret) (string, error) {
	list, err := docker.SecretList(ctx, client.SecretListOptions{Filters: make(client.Filters).Add("name", s.Name)})
	if err != nil {
		return "", fmt.Errorf("listing secrets: %w", err)
	}
	for _, e := range list.Items {
		if e.Spec.Name == s.Name {
			return e.ID, nil
		}
	}
	res, err := docker.SecretCreate(ctx, client.SecretCreateOptions{Spec: s.Spec()})
	if err != nil {
		return "", fmt.Errorf("creating Swarm secret %s: %w", s.Name, err)
	}
	return res.ID, nil
}

// wait follows the service's update until Swarm ends it.
func (r *Rotator) wait(ctx context.Context, id string) error {
	deadline := r.Clock.Now().Add(r.UpdateTimeout)
	for {
		cur, err := r.Docker.ServiceInspect(ctx, id, client.ServiceInspectOptions{})
		if err != nil {
			return fmt.Errorf("inspecting: %w", err)
		}
		if st := cur.Service.UpdateStatus; st != nil {
			switch st.State {
			case swarm.UpdateStateCompleted:
				return nil
			case swarm.UpdateStateRollbackCompleted, swarm.UpdateStateRollbackPaused, swarm.UpdateStatePaused:
				return fmt.Errorf("Swarm's update ended %s: %s", st.State, st.Message)
			}
		}
		if !r.Clock.Now().Before(deadline) {
			return fmt.Errorf("Swarm's update has not ended after %s", r.UpdateTimeout)
		}
		if err := clock.Sleep(ctx, r.Clock, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// prune removes the DSO secrets that no service mounts and that a newer
// secret of the same reference, mounted by a service, replaced. (A secret
// that nothing mounts yet may be one `stack deploy` is about to use.)
func (r *Rotator) prune(ctx context.Context) error {
	list, err := r.Docker.SecretList(ctx, client.SecretListOptions{Filters: make(client.Filters).Add("label", driver.LabelStack)})
	if err != nil {
		return fmt.Errorf("listing secrets: %w", err)
	}
	services, err := r.Docker.ServiceList(ctx, client.ServiceListOptions{})
	if err != nil {
		return fmt.Errorf("listing services: %w", err)
	}
	used := map[string]bool{}
	for _, svc := range services.Items {
		for _, ref := range secretRefs(svc.Spec) {
			used[ref.SecretName] = true
		}
	}
	type group struct{ stack, ref string }
	newestUsed := map[group]time.Time{}
	for _, s := range list.Items {
		if sec, ok := FromSpec(s.Spec); ok && used[s.Spec.Name] {
			g := group{sec.Stack, sec.Ref.String()}
			if s.CreatedAt.After(newestUsed[g]) {
				newestUsed[g] = s.CreatedAt
			}
		}
	}
	for _, s := range list.Items {
		sec, ok := FromSpec(s.Spec)
		if !ok || used[s.Spec.Name] {
			continue
		}
		if t, ok := newestUsed[group{sec.Stack, sec.Ref.String()}]; !ok || !s.CreatedAt.Before(t) {
			continue
		}
		if _, err := r.Docker.SecretRemove(ctx, s.ID, client.SecretRemoveOptions{}); err != nil {
			// Tasks of the old version may still be shutting down.
			r.Log.Debug("old swarm secret not removed yet", "secret", s.Spec.Name, "err", err)
			continue
		}
		r.Log.Info("old swarm secret removed", "secret", s.Spec.Name)
	}
	return nil
}
