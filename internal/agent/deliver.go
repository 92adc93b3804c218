package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/backoff"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/deliver"
	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/retry"
	"github.com/dso-project/dso/internal/resolve"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/state"
)

// A delivery is for one start of one container (its State.StartedAt): the
// start event, the agent finding it running and a rotation that started it
// share that one delivery, which is retried with backoff until it succeeds,
// the container's init gives up (its --timeout after the start), or the
// start is over (the container stopped or started again).
type start struct {
	at   string // State.StartedAt
	done chan struct{}
	err  error
}

// waiting is a start whose delivery failed and is being retried.
type waiting struct {
	name, project, service string
	since, deadline        time.Time
	attempts               int
	reason                 string
}

// errStartOver says the container is no longer in the start being served.
var errStartOver = errors.New("the container stopped or started again")

// Deliver hands container id, as it runs now, its secrets, retrying until
// its init's deadline. It waits for a delivery to the same start that is
// under way instead of starting a second one. It ends a deferral.
func (a *Agent) Deliver(ctx context.Context, id string) error {
	a.mu.Lock()
	delete(a.deferred, id)
	a.mu.Unlock()
	return a.deliverStart(ctx, id, false)
}

// deferDelivery makes the starts of container id wait for Deliver: the
// engine's start event and the agent finding it running deliver nothing.
func (a *Agent) deferDelivery(id string) {
	a.mu.Lock()
	a.deferred[id] = true
	a.mu.Unlock()
}

// deliverStart is Deliver, but for a deferred container; with slot, each
// attempt takes one of the agent's Parallel slots (a caller already
// holding one passes false).
func (a *Agent) deliverStart(ctx context.Context, id string, slot bool) error {
	a.mu.Lock()
	deferred := a.deferred[id]
	a.mu.Unlock()
	if deferred {
		return nil
	}
	ins, err := a.opts.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	c := ins.Container
	if c.State == nil || !c.State.Running {
		return nil
	}
	if !a.admit(ctx, id) {
		return a.refuse(ctx, c, c.Config.Labels["com.docker.compose.project"], c.Config.Labels["com.docker.compose.service"])
	}
	a.mu.Lock()
	if s := a.starts[id]; s != nil && s.at == c.State.StartedAt {
		a.mu.Unlock()
		select {
		case <-s.done:
			return s.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s := &start{at: c.State.StartedAt, done: make(chan struct{})}
	a.starts[id] = s
	a.mu.Unlock()
	s.err = a.retry(ctx, id, c, slot)
	close(s.done)
	return s.err
}

// retry delivers to the start of c until it works, its deadline passes or
// the start is over (then it returns nil: the next start gets its own).
func (a *Agent) retry(ctx context.Context, id string, c container.InspectResponse, slot bool) error {
	defer a.stopWaiting(id)
	deadline := a.deadline(c)
	b := backoff.New(a.opts.Clock, a.opts.DeliveryBackoff, 5*time.Second)
	told := ""
	for attempt := 1; ; attempt++ {
		err := a.attempt(ctx, id, c, slot)
		if err == nil || errors.Is(err, errStartOver) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		now := a.opts.Clock.Now()
		wait := b.Next()
		if !now.Add(wait).Before(deadline) {
			a.opts.Log.Error("delivery failed; the container's init gives up now", "container", shortID(id), "attempts", attempt, "error", err)
			return err
		}
		why := err.Error()
		a.setWaiting(id, c, deadline, attempt, why)
		if attempt == 1 || why != told {
			a.opts.Log.Warn("delivery failed; retrying until the container's init gives up", "container", shortID(id), "until", deadline.Format(time.RFC3339), "error", err)
			if terr := deliver.Tell(ctx, a.opts.Docker, c, why); terr == nil {
				told = why
			}
		}
		if err := a.sleepOrWake(ctx, wait); err != nil {
			return err
		}
		still, err := a.opts.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil || still.Container.State == nil || !still.Container.State.Running || still.Container.State.StartedAt != c.State.StartedAt {
			return nil
		}
	}
}

// sleepOrWake waits d, or less when Wake is called: a provider may be back.
func (a *Agent) sleepOrWake(ctx context.Context, d time.Duration) error {
	a.mu.Lock()
	wake := a.wake
	a.mu.Unlock()
	t := a.opts.Clock.TimerAt(a.opts.Clock.Now().Add(d))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
	case <-wake:
	}
	return nil
}

// Wake ends the waits of the deliveries being retried, so that they try
// again now: a local vault file changed, or a provider answered again.
func (a *Agent) Wake() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.waiting) == 0 {
		return
	}
	close(a.wake)
	a.wake = make(chan struct{})
}

// deadline is when the init of c stops waiting: its --timeout after the
// start (a start already past it still gets one attempt).
func (a *Agent) deadline(c container.InspectResponse) time.Time {
	timeout := initproc.DefaultTimeout
	if c.Path == initproc.InitPath {
		if d, _, err := initproc.ParseArgs(c.Args); err == nil {
			timeout = d
		}
	}
	started, err := time.Parse(time.RFC3339Nano, c.State.StartedAt)
	if err != nil {
		started = a.opts.Clock.Now()
	}
	return started.Add(timeout)
}

// attempt is one delivery to the start of c: resolve, then send.
func (a *Agent) attempt(ctx context.Context, id string, c container.InspectResponse, slot bool) error {
	if slot {
		select {
		case a.sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-a.sem }()
	}
	return a.send(ctx, id, c, "")
}

// deliver sends container id, as it runs now, its current values (or its
// pinned ones) once; signal, when set, goes to the application after the
// files are rewritten (a signal rotation).
func (a *Agent) deliver(ctx context.Context, id, signal string) error {
	ins, err := a.opts.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	if err := a.send(ctx, id, ins.Container, signal); !errors.Is(err, errStartOver) {
		return err
	}
	return nil
}

func (a *Agent) send(ctx context.Context, id string, c container.InspectResponse, signal string) error {
	if c.State == nil || !c.State.Running {
		return errStartOver
	}
	a.mu.Lock()
	h, pinned := a.held[id], a.pinned[id]
	a.mu.Unlock()
	var payload, keep *initproc.Payload
	var blob []byte
	if pinned && h != nil {
		blob, _ = a.kept.Kept(id)
	}
	if blob != nil {
		var err error
		payload, err = initproc.ReadPayload(bytes.NewReader(blob))
		clear(blob)
		if err != nil {
			return fmt.Errorf("the values container %s had: %w", shortID(id), err)
		}
	} else {
		var values []deliver.Value
		var err error
		values, h, err = a.values(ctx, c)
		if err != nil {
			a.metric(func(m *metrics.Metrics) { m.ObserveDelivery(err) })
			a.emit(events.Event{Type: events.TypeDelivery, Level: "ERROR", Container: shortID(id), Service: h.service, Project: h.project, Result: metrics.ResultFailure, Message: err.Error()})
			return err
		}
		payload = deliver.NewPayload(values, signal)
		keep = &initproc.Payload{Env: payload.Env, Files: payload.Files, Perms: payload.Perms}
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := deliver.Send(dctx, a.opts.Docker, c, payload)
	a.metric(func(m *metrics.Metrics) { m.ObserveDelivery(err) })
	if err != nil {
		if still, _ := a.opts.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); still.Container.State == nil || !still.Container.State.Running || still.Container.State.StartedAt != c.State.StartedAt {
			return errStartOver // its next start gets a delivery
		}
		a.emit(events.Event{Type: events.TypeDelivery, Level: "ERROR", Container: shortID(id), Service: h.service, Project: h.project, Result: metrics.ResultFailure, Message: err.Error()})
		return err
	}
	if keep != nil {
		a.keep(id, keep)
	}
	a.remember(id, h)
	n := len(payload.Env)
	msg := fmt.Sprintf("delivered %d variables", n)
	if len(h.fromCache) > 0 {
		msg += fmt.Sprintf(" (%s from the cache: provider failing)", strings.Join(h.cachedNames(), ", "))
	}
	a.opts.Log.Info("delivered secrets", "container", shortID(id), "name", h.name, "service", h.service, "variables", n, "pinned", pinned, "from_cache", h.cachedNames())
	a.emit(events.Event{Type: events.TypeDelivery, Container: shortID(id), Service: h.service, Project: h.project, Result: metrics.ResultSuccess, Message: msg})
	return nil
}

// values resolves what container c must receive, and what it will hold.
// A secret whose provider fails (unreachable, throttled, access denied)
// comes from the cache when it holds a value young enough.
func (a *Agent) values(ctx context.Context, c container.InspectResponse) ([]deliver.Value, *holding, error) {
	labels := c.Config.Labels
	h := &holding{
		name: c.Name, project: labels["com.docker.compose.project"], service: labels["com.docker.compose.service"],
		config: a.projects.config(labels["com.docker.compose.project"]),
	}
	refs, err := compose.RefsFromLabels(labels)
	if err != nil {
		return nil, h, err
	}
	set, err := a.opts.Providers(h.config)
	if err != nil {
		return nil, h, err
	}
	list := make([]secretref.Ref, 0, len(refs))
	vars := make([]string, 0, len(refs))
	for v, r := range refs {
		vars = append(vars, v)
		list = append(list, r)
	}
	// One attempt per provider: this delivery is retried by its own loop,
	// and a failure is served from the cache at once when it can be.
	got, err := set.Fetch(retry.Once(ctx), list)
	if err != nil {
		if err = a.fromCache(set, h, got, err); err != nil {
			return nil, h, err
		}
	}
	sort.Strings(vars)
	values := make([]deliver.Value, 0, len(vars))
	for _, v := range vars {
		r := refs[v]
		res := got[r]
		key := watchKey(h.config, res.Provider, r.Path)
		h.hold(key, res.Version, !r.File)
		if _, cached := h.fromCache[key]; !cached && a.cache != nil {
			if err := a.cache.Put(key, r.Key, res.Value, res.Version); err != nil {
				a.opts.Log.Warn("could not keep a value in the cache", "secret", keyName(key), "error", err)
			}
		}
		values = append(values, deliver.Value{Var: v, File: r.File, Perm: r.Perm, Data: res.Value})
	}
	h.finish()
	a.metric(func(m *metrics.Metrics) {
		if a.cache != nil {
			m.CacheSecrets.Set(float64(a.cache.Len()))
		}
	})
	return values, h, nil
}

// fromCache fills got with cached values for the references that failed
// in fetchErr because their provider failed. It returns the failures that
// remain, each saying why the cache could not stand in.
func (a *Agent) fromCache(set *resolve.Set, h *holding, got map[secretref.Ref]resolve.Resolved, fetchErr error) error {
	var errs resolve.Errors
	if a.cache == nil || !errors.As(fetchErr, &errs) {
		return fetchErr
	}
	left := resolve.Errors{}
	for ref, err := range errs {
		_, name, perr := set.Provider(ref)
		if perr != nil || !outage(err) {
			left[ref] = err
			continue
		}
		key := watchKey(h.config, name, ref.Path)
		v, version, age, cerr := a.cache.Get(key, ref.Key)
		if cerr != nil {
			left[ref] = fmt.Errorf("%w; not served from the cache: %v", err, cerr)
			continue
		}
		got[ref] = resolve.Resolved{Value: v, Version: version, Provider: name}
		if h.fromCache == nil {
			h.fromCache = map[string]time.Time{}
		}
		h.fromCache[key] = a.opts.Clock.Now().Add(-age)
		a.metric(func(m *metrics.Metrics) { m.CacheServed.Inc() })
		a.opts.Log.Warn("serving a secret from the cache: its provider fails", "secret", keyName(key), "age", age.Round(time.Second), "error", err)
	}
	if len(left) > 0 {
		return left
	}
	return nil
}

// outage reports a provider failure the cache may stand in for: the
// backend is down, throttling, or refusing the agent's credentials. A
// secret that is missing is not an outage.
func outage(err error) bool {
	return errors.Is(err, provider.ErrUnreachable) || errors.Is(err, provider.ErrThrottled) || errors.Is(err, provider.ErrDenied)
}

// keep stores what container id was delivered in the agent's locked
// memory, for a rollback that brings it back.
func (a *Agent) keep(id string, p *initproc.Payload) {
	blob, err := json.Marshal(p)
	if err == nil {
		err = a.kept.Keep(id, blob)
	}
	clear(blob)
	if err != nil {
		a.opts.Log.Warn("could not keep what the container was delivered; a rollback would deliver the current values", "container", shortID(id), "error", err)
		a.kept.Release(id)
	}
}

// remember records what a container holds and watches its secrets.
func (a *Agent) remember(id string, h *holding) {
	a.mu.Lock()
	a.held[id] = h
	n := 0
	for _, o := range a.held {
		if len(o.fromCache) > 0 {
			n++
		}
	}
	a.fromCacheCount = n
	a.mu.Unlock()
	a.metric(func(m *metrics.Metrics) { m.ContainersFromCache.Set(float64(n)) })
	for _, s := range h.secrets {
		a.watcher.Add(s.key, s.version)
	}
	a.record(id, h)
	a.updateWatched()
}

// record writes what container id holds to the state store.
func (a *Agent) record(id string, h *holding) {
	if a.opts.Store == nil {
		return
	}
	err := a.opts.Store.PutContainer(state.Container{ID: id, Name: h.name, Project: h.project, Service: h.service, Secrets: h.versions(), UpdatedAt: time.Now()})
	if err != nil {
		a.opts.Log.Warn("could not record the container in the state store", "container", shortID(id), "error", err)
	}
}

func (a *Agent) setWaiting(id string, c container.InspectResponse, deadline time.Time, attempts int, reason string) {
	labels := c.Config.Labels
	a.mu.Lock()
	w := a.waiting[id]
	if w == nil {
		w = &waiting{name: strings.TrimPrefix(c.Name, "/"), project: labels["com.docker.compose.project"], service: labels["com.docker.compose.service"], since: a.opts.Clock.Now()}
		a.waiting[id] = w
	}
	w.deadline, w.attempts, w.reason = deadline, attempts, reason
	n := len(a.waiting)
	a.mu.Unlock()
	a.metric(func(m *metrics.Metrics) { m.ContainersWaiting.Set(float64(n)) })
}

func (a *Agent) stopWaiting(id string) {
	a.mu.Lock()
	delete(a.waiting, id)
	n := len(a.waiting)
	a.mu.Unlock()
	a.metric(func(m *metrics.Metrics) { m.ContainersWaiting.Set(float64(n)) })
}

// waitingStatus lists the containers waiting for their secrets.
func (a *Agent) waitingStatus() []api.WaitingStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]api.WaitingStatus, 0, len(a.waiting))
	for id, w := range a.waiting {
		out = append(out, api.WaitingStatus{ID: shortID(id), Name: w.name, Project: w.project, Service: w.service,
			Since: w.since, Deadline: w.deadline, Attempts: w.attempts, Reason: w.reason})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
