// Package agent is the per-host daemon. It watches the Docker engine for
// managed containers that start (first start, `docker restart`, a crash
// under a restart policy, a daemon restart) and delivers their secrets to
// the init waiting inside them; it reconnects after the engine restarts and
// serves the containers already running. It polls the versions of the
// secrets those containers hold and, when one changes, rotates the
// containers that use it by their strategy (none, signal, restart), one
// rotation per service at a time, with retries and backoff.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/backoff"
	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/deliver"
	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/notify"
	"github.com/dso-project/dso/internal/resolve"
	"github.com/dso-project/dso/internal/rotate"
	"github.com/dso-project/dso/internal/secretcache"
	"github.com/dso-project/dso/internal/state"
	"github.com/dso-project/dso/internal/watch"
)

// Docker is the part of the engine client the agent uses.
type Docker interface {
	deliver.Docker
	rotate.Docker
	Events(ctx context.Context, opts client.EventsListOptions) client.EventsResult
	ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error)
}

// Providers returns the provider set for the dso.yaml at path ("" when the
// container was wired without one).
type Providers func(path string) (*resolve.Set, error)

// Configs returns the dso.yaml at path ("" for the agent's own; nil when
// there is none).
type Configs func(path string) (*config.Config, error)

// Options configure the agent. Store, Metrics and Bus are optional.
type Options struct {
	Docker Docker
	// ID is the dso.agent label value of the containers this agent serves.
	ID        string
	Providers Providers
	Configs   Configs
	// OwnConfig is the path of the agent's own dso.yaml ("" when none): a
	// caller that registers a project may name it whoever it is.
	OwnConfig string
	// Access limits the secrets a caller may register containers with
	// (dso.yaml agent.access); none: no limit.
	Access  []config.Access
	Log     *slog.Logger
	Store   *state.Store
	Metrics *metrics.Metrics
	Bus     *events.Bus
	// Notify, when set, gets every finished rotation (the outbound
	// webhooks); it must not block.
	Notify func(notify.Notification)
	// Parallel bounds deliveries and rotations in flight (default 4).
	Parallel int
	// PollInterval is the base polling interval of secret versions (30s).
	PollInterval time.Duration
	// HealthTimeout bounds the wait for a rotated container (30s).
	HealthTimeout time.Duration
	// RetryBackoff is the first wait before retrying a failed rotation (2s).
	RetryBackoff time.Duration
	// DeliveryBackoff is the first wait before retrying a failed delivery
	// (500ms; the waits double up to 5s).
	DeliveryBackoff time.Duration
	// Cache, when set, keeps last-known-good values and serves them when
	// a provider fails.
	Cache *secretcache.Cache
	// Clock is the time source of every wait (the system clock when nil).
	Clock clock.Clock
	// DrainTimeout bounds the drain of a replaced container's connections
	// behind its proxy (30s).
	DrainTimeout time.Duration
	// Proxy drives the proxies that own the host ports of rolling services.
	Proxy rotate.Proxy
	// HostPorts says whether this agent can bind the proxies' host ports
	// and hand them over, or why not (hostPortsHere); Status tells `up`.
	// Nil: it cannot.
	HostPorts func(context.Context) error
	// StopGrace is how long a stopping agent lets rotations in flight
	// finish before it leaves them to the next start (20s).
	StopGrace time.Duration
	// CrashAt is a test-only crash point, "strategy:step": the agent kills
	// itself with SIGKILL when a rotation is about to take that step.
	CrashAt string
}

// Agent delivers secrets to managed containers and rotates them.
type Agent struct {
	opts    Options
	sem     chan struct{}
	wg      sync.WaitGroup
	watcher *watch.Watcher
	started time.Time
	// projects and registry are the registrations from the socket
	// (projects.go, registry.go).
	projects *projects
	registry *registry
	// ports are host ports bound for proxies not started yet (hostports.go).
	ports boundPorts
	// replacer applies rotations and recovers unfinished ones.
	replacer *rotate.Replacer
	// rotationsWG counts rotations in flight, which a stop lets finish;
	// they run under rctx, cancelled a grace period after the agent's.
	rotationsWG sync.WaitGroup
	rctx        context.Context
	// swarmManager is the engine once it is known to be a Swarm manager
	// (swarm.go); nil before and elsewhere.
	swarmManager atomic.Pointer[SwarmDocker]

	mu       sync.Mutex
	held     map[string]*holding    // container ID -> what it holds
	services map[string]*sync.Mutex // project/service -> one rotation at a time
	// pinned containers get their last payload again, not the current
	// values: the old container of a restart rotation, brought back.
	pinned map[string]bool
	// deferred containers get no delivery until a rotation's Deliver: the
	// new container of a stop-first swap, started while the old one stops.
	deferred map[string]bool
	// failing are the parts of the daemon that fail, with why.
	failing parts
	starts  map[string]*start   // container ID -> delivery of its current start
	waiting map[string]*waiting // container ID -> why its delivery is late
	wake    chan struct{}       // closed by Wake
	cache   *secretcache.Cache
	// kept holds what each container was last delivered, outside the Go
	// heap: the cache's memory when the cache is on, memory of its own
	// otherwise.
	kept *secretcache.Cache
	// fromCacheCount is how many held containers have a value from the
	// cache (0 spares observe a walk over every container).
	fromCacheCount int
	// running holds the journal IDs of the rotations in flight here, which
	// a reconciliation leaves alone.
	running map[uint64]bool
}

// holding is what one running container received. What was delivered is
// in Agent.kept, so that a container brought back by a rollback gets its
// old values again.
type holding struct {
	name, project, service string
	config                 string // dso.yaml path label
	// secrets are the watch keys it holds, sorted: one slice rather than
	// maps, as an agent may hold 10,000.
	secrets []heldSecret
	// fromCache are the watch keys served from the cache, with when their
	// provider last confirmed them, until the provider confirms them again.
	fromCache map[string]time.Time
}

// heldSecret is one watch key a container holds: the version delivered,
// and whether a reference gave it as an environment variable.
type heldSecret struct {
	key, version string
	env          bool
}

// hold records key at version; finish sorts and merges before use.
func (h *holding) hold(key, version string, env bool) {
	h.secrets = append(h.secrets, heldSecret{key: key, version: version, env: env})
}

// finish sorts the keys held and merges repeats (two references to one
// secret, with other #keys): env when any of them is.
func (h *holding) finish() {
	slices.SortFunc(h.secrets, func(a, b heldSecret) int { return strings.Compare(a.key, b.key) })
	out := h.secrets[:0]
	for _, s := range h.secrets {
		if n := len(out); n > 0 && out[n-1].key == s.key {
			out[n-1].env = out[n-1].env || s.env
			continue
		}
		out = append(out, s)
	}
	h.secrets = slices.Clip(out)
}

// find returns what h holds of key.
func (h *holding) find(key string) (heldSecret, bool) {
	i, ok := slices.BinarySearchFunc(h.secrets, key, func(s heldSecret, k string) int { return strings.Compare(s.key, k) })
	if !ok {
		return heldSecret{}, false
	}
	return h.secrets[i], true
}

// versions are the versions h holds by watch key, for the state store.
func (h *holding) versions() map[string]string {
	m := make(map[string]string, len(h.secrets))
	for _, s := range h.secrets {
		m[s.key] = s.version
	}
	return m
}

// cachedNames are the secrets h got from the cache, as people see them.
func (h *holding) cachedNames() []string {
	out := make([]string, 0, len(h.fromCache))
	for k := range h.fromCache {
		out = append(out, keyName(k))
	}
	sort.Strings(out)
	return out
}

// New returns an agent; Run starts it.
func New(opts Options) (*Agent, error) {
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Configs == nil {
		opts.Configs = func(string) (*config.Config, error) { return nil, nil }
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.DeliveryBackoff <= 0 {
		opts.DeliveryBackoff = 500 * time.Millisecond
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = 2 * time.Second
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 20 * time.Second
	}
	a := &Agent{opts: opts, sem: make(chan struct{}, opts.Parallel), held: map[string]*holding{}, services: map[string]*sync.Mutex{}, pinned: map[string]bool{}, deferred: map[string]bool{}, failing: parts{}, running: map[uint64]bool{},
		starts: map[string]*start{}, waiting: map[string]*waiting{}, wake: make(chan struct{}), cache: opts.Cache, kept: opts.Cache}
	if a.kept == nil {
		a.kept = secretcache.New(0, opts.Clock)
	}
	w, err := watch.New(watch.Config{Check: a.version, Interval: opts.PollInterval, Observe: a.observe})
	if err != nil {
		return nil, err
	}
	a.watcher = w
	if a.projects, err = newProjects(opts.Store, opts.OwnConfig, uint32(os.Getuid())); err != nil {
		return nil, err
	}
	if a.registry, err = newRegistry(opts.Store); err != nil {
		return nil, err
	}
	a.opts.Docker = adoptingDocker{Docker: opts.Docker, reg: a.registry}
	// Replacements are created through the adopting client: they are the
	// agent's own, served without a registration.
	a.replacer = &rotate.Replacer{Docker: a.opts.Docker, Journal: a.journal(), Proxy: opts.Proxy, Deliver: a.Deliver, Defer: a.deferDelivery, Resignal: a.deliver,
		HealthTimeout: opts.HealthTimeout, DrainTimeout: opts.DrainTimeout, RetryBackoff: opts.RetryBackoff, Clock: opts.Clock, Log: opts.Log, BeforeStep: crashPoint(opts.CrashAt)}
	return a, nil
}

// Watcher gives access to triggers (webhooks, the local vault file).
func (a *Agent) Watcher() *watch.Watcher { return a.watcher }

// Run serves until ctx is cancelled, reconnecting to the engine with backoff
// when the connection drops. A cancelled ctx is not an error.
func (a *Agent) Run(ctx context.Context) error {
	a.started = a.opts.Clock.Now()
	ctx, cancel := context.WithCancel(ctx)
	// Rotations in flight outlive ctx by the stop grace: a stop in the
	// middle of a swap lets it finish rather than leave it to recovery. So
	// rctx ends after the wait below (the goroutine that ends it after the
	// grace is one of a.wg), not when Run returns.
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer rcancel()
	defer a.wg.Wait()
	defer cancel()
	a.rctx = rctx
	a.wg.Add(3)
	go func() { defer a.wg.Done(); a.watcher.Run(ctx) }()
	go func() { defer a.wg.Done(); a.rotations(ctx) }()
	go func() {
		defer a.wg.Done()
		<-ctx.Done()
		done := make(chan struct{})
		go func() { a.rotationsWG.Wait(); close(done) }()
		grace := a.opts.Clock.TimerAt(a.opts.Clock.Now().Add(a.opts.StopGrace))
		defer grace.Stop()
		select {
		case <-done:
		case <-grace.C():
		}
		rcancel()
	}()
	b := backoff.New(a.opts.Clock, 250*time.Millisecond, 10*time.Second)
	for {
		start := a.opts.Clock.Now()
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if a.opts.Clock.Now().Sub(start) > 30*time.Second {
			b.Reset()
		}
		wait := b.Next()
		a.opts.Log.Warn("lost the Docker engine event stream; reconnecting", "error", err, "in", wait)
		a.degrade("Docker engine", err)
		if clock.Sleep(ctx, a.opts.Clock, wait) != nil {
			return nil
		}
	}
}

// session subscribes to container events, then serves the containers that
// already run, then follows the stream until it fails.
func (a *Agent) session(ctx context.Context) error {
	// The managed containers and the proxies of this agent.
	mine := compose.LabelAgent + "=" + a.opts.ID
	f := client.Filters{}.Add("type", "container").Add("event", "start", "die", "rename", "destroy").Add("label", mine)
	ev := a.opts.Docker.Events(ctx, client.EventsListOptions{Filters: f})

	list, err := a.opts.Docker.ContainerList(ctx, client.ContainerListOptions{
		Filters: client.Filters{}.Add("label", mine).Add("status", "running"),
	})
	if err != nil {
		return fmt.Errorf("list managed containers: %w", err)
	}
	managed := slices.DeleteFunc(list.Items, func(c container.Summary) bool {
		if c.Labels[compose.LabelProxyFor] != "" {
			a.spawn(ctx, func(ctx context.Context) { a.activate(ctx, c.ID, c.Labels) })
		}
		return c.Labels[compose.LabelManaged] != "true"
	})
	a.opts.Log.Info("connected to the Docker engine", "running_managed_containers", len(managed))
	a.degrade("Docker engine", nil)
	a.reconcile(ctx)
	for _, c := range managed {
		a.spawn(ctx, func(ctx context.Context) { a.serveRunning(ctx, c.ID) })
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
			id := m.Actor.ID
			switch proxy := m.Actor.Attributes[compose.LabelProxyFor] != ""; {
			case proxy && m.Action == "destroy":
				a.ports.release(id)
			case proxy && m.Action == "die":
				a.wg.Go(func() { a.ports.stopped(id) })
			case proxy && m.Action == "start":
				a.wg.Go(func() { a.activate(ctx, id, m.Actor.Attributes) })
			case proxy, m.Actor.Attributes[compose.LabelManaged] != "true":
			case m.Action == "destroy":
				a.forget(id)
			case m.Action == "rename":
				// A rotation gives the new container its compose name once
				// the old one is gone.
				a.renamed(id, m.Actor.Attributes["name"])
			case m.Action == "start":
				a.emit(events.Event{Type: events.TypeContainer, Message: "container started", Container: shortID(id), Service: m.Actor.Attributes["com.docker.compose.service"], Project: m.Actor.Attributes["com.docker.compose.project"]})
				a.wg.Add(1)
				go func() {
					defer a.wg.Done()
					a.logErr(id, a.deliverStart(ctx, id, true))
				}()
			}
		}
	}
}

func (a *Agent) spawn(ctx context.Context, fn func(context.Context)) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		select {
		case a.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-a.sem }()
		fn(ctx)
	}()
}

func (a *Agent) logErr(id string, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		a.opts.Log.Error("delivery failed", "container", shortID(id), "error", err)
	}
}

// serveRunning handles a container found running when the agent connects:
// it gets its secrets (it may have started while no agent ran), or, when the
// agent's state says it holds versions that changed since, it is rotated.
func (a *Agent) serveRunning(ctx context.Context, id string) {
	// A replacement still under its temporary name, that no rotation of
	// this agent is taking, is left to recovery (which runs again at the
	// next connection): its old container may still run, and a stop-first
	// swap must not start a second application.
	if ins, err := a.opts.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); err == nil {
		if j, temp := rotate.JournalOf(ins.Container.Name); temp {
			a.mu.Lock()
			mine := a.running[j]
			a.mu.Unlock()
			if !mine {
				a.opts.Log.Warn("not serving a replacement that an earlier rotation left unsettled", "container", shortID(id), "name", strings.TrimPrefix(ins.Container.Name, "/"))
				return
			}
		}
	}
	if a.opts.Store != nil {
		if rec, found, err := a.opts.Store.Container(id); err == nil && found {
			if changed := a.changedSince(ctx, id, rec.Secrets); len(changed) > 0 {
				a.rotateTracked(id, changed)
				return
			}
		}
	}
	a.logErr(id, a.deliverStart(ctx, id, false))
}

// changedSince returns the watch keys whose current version differs from
// what the container was given.
func (a *Agent) changedSince(ctx context.Context, id string, held map[string]string) []string {
	var changed []string
	for key, v := range held {
		cur, err := a.version(ctx, key)
		if err == nil && cur != v {
			changed = append(changed, key)
		}
	}
	sort.Strings(changed)
	return changed
}

// renamed records the new name of a container the agent holds secrets
// for, in what `docker dso status` shows and in the state store.
func (a *Agent) renamed(id, name string) {
	a.mu.Lock()
	h, ok := a.held[id]
	if ok {
		// A copy: remember may still be reading the one it stored.
		renamed := *h
		renamed.name = name
		h = &renamed
		a.held[id] = h
	}
	a.mu.Unlock()
	if ok {
		a.record(id, h)
	}
}

// forget drops a removed container and stops watching secrets no one holds.
func (a *Agent) forget(id string) {
	a.registry.drop(id)
	a.mu.Lock()
	h, ok := a.held[id]
	delete(a.held, id)
	delete(a.pinned, id)
	delete(a.deferred, id)
	delete(a.starts, id)
	inUse := map[string]bool{}
	for _, other := range a.held {
		for _, s := range other.secrets {
			inUse[s.key] = true
		}
	}
	a.mu.Unlock()
	a.kept.Release(id)
	if ok {
		for _, s := range h.secrets {
			if !inUse[s.key] {
				a.watcher.Remove(s.key)
				if a.cache != nil {
					a.cache.Drop(s.key)
				}
			}
		}
	}
	if a.opts.Store != nil {
		a.opts.Store.DeleteContainer(id)
	}
	a.updateWatched()
}

func (a *Agent) updateWatched() {
	a.mu.Lock()
	keys := map[string]bool{}
	for _, h := range a.held {
		for _, s := range h.secrets {
			keys[s.key] = true
		}
	}
	a.mu.Unlock()
	a.metric(func(m *metrics.Metrics) { m.SecretsWatched.Set(float64(len(keys))) })
}

// version is the watcher's check: the provider's version of a secret,
// without its value.
func (a *Agent) version(ctx context.Context, key string) (string, error) {
	cfg, prov, path, err := splitKey(key)
	if err != nil {
		return "", err
	}
	set, err := a.opts.Providers(cfg)
	if err != nil {
		return "", err
	}
	p, ok := set.Named(prov)
	if !ok {
		return "", fmt.Errorf("provider %q is no longer in the configuration", prov)
	}
	start := time.Now()
	v, err := p.Version(ctx, path)
	a.metric(func(m *metrics.Metrics) { m.ObserveProvider(prov, "version", err, time.Since(start), time.Now()) })
	return v, err
}

// observe reports failed checks and records changes in the state store
// (the watcher keeps the time of each check; writing every check would cost
// a disk sync each).
func (a *Agent) observe(r watch.Result) {
	if r.Err != nil {
		a.emit(events.Event{Type: events.TypeProviderError, Level: "WARN", Secret: keyName(r.Key), Message: r.Err.Error()})
		return
	}
	a.metric(func(m *metrics.Metrics) { m.LastSuccessfulPoll.Set(float64(r.At.Unix())) })
	a.Wake() // a provider answers: late deliveries try again now
	if a.cache != nil {
		a.cache.Seen(r.Key, r.Version)
		a.confirmed(r.Key, r.Version)
	}
	if a.opts.Store != nil && r.Changed {
		a.opts.Store.RecordCheck(r.Key, r.Version, r.At)
	}
}

// confirmed clears "from the cache" on the containers that got key from
// the cache at the version its provider has just confirmed.
func (a *Agent) confirmed(key, version string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fromCacheCount == 0 {
		return
	}
	n := 0
	for _, h := range a.held {
		if _, ok := h.fromCache[key]; ok {
			if s, _ := h.find(key); s.version == version {
				delete(h.fromCache, key)
			}
		}
		if len(h.fromCache) > 0 {
			n++
		}
	}
	a.fromCacheCount = n
	a.metric(func(m *metrics.Metrics) { m.ContainersFromCache.Set(float64(n)) })
}

func (a *Agent) emit(e events.Event) {
	if a.opts.Bus != nil {
		a.opts.Bus.Publish(e)
	}
}

func (a *Agent) metric(fn func(*metrics.Metrics)) {
	if a.opts.Metrics != nil {
		fn(a.opts.Metrics)
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
