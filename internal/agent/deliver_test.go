package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/resolve"
	"github.com/dso-project/dso/internal/secretcache"
	"github.com/dso-project/dso/internal/state"
	"github.com/dso-project/dso/internal/watch"
)

// fakeDocker is a func-field fake of the engine calls the agent makes;
// a call without its func fails the test.
type fakeDocker struct {
	t             *testing.T
	inspect       func(id string) (container.InspectResponse, error)
	exec          func(id string, p *initproc.Payload) error // one delivery exec
	list          func() ([]container.Summary, error)
	events        func(ctx context.Context) client.EventsResult
	mu            sync.Mutex
	execs         map[string]*initproc.Payload
	nextExec      int
	pendingResult map[string]error
}

func (f *fakeDocker) ContainerInspect(ctx context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	c, err := f.inspect(id)
	return client.ContainerInspectResult{Container: c}, err
}

func (f *fakeDocker) ExecCreate(ctx context.Context, id string, opts client.ExecCreateOptions) (client.ExecCreateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextExec++
	execID := fmt.Sprintf("exec-%d-%s", f.nextExec, id)
	if f.execs == nil {
		f.execs, f.pendingResult = map[string]*initproc.Payload{}, map[string]error{}
	}
	f.execs[execID] = nil
	return client.ExecCreateResult{ID: execID}, nil
}

// ExecAttach reads the payload the agent writes, as `dso-init deliver`
// would, and hands it to f.exec.
func (f *fakeDocker) ExecAttach(ctx context.Context, execID string, _ client.ExecAttachOptions) (client.ExecAttachResult, error) {
	ours, theirs := net.Pipe()
	go func() {
		defer theirs.Close()
		p, err := initproc.ReadPayload(theirs)
		if err == nil {
			id := execID[strings.LastIndexByte(execID, '-')+1:]
			err = f.exec(id, p)
		}
		f.mu.Lock()
		f.pendingResult[execID] = err
		f.execs[execID] = p
		f.mu.Unlock()
	}()
	return client.ExecAttachResult{HijackedResponse: client.NewHijackedResponse(ours, "")}, nil
}

func (f *fakeDocker) ExecInspect(ctx context.Context, execID string, _ client.ExecInspectOptions) (client.ExecInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, done := f.execs[execID]
	if !done || p == nil && f.pendingResult[execID] == nil {
		return client.ExecInspectResult{Running: true}, nil
	}
	if f.pendingResult[execID] != nil {
		return client.ExecInspectResult{ExitCode: 1}, nil
	}
	return client.ExecInspectResult{ExitCode: 0}, nil
}

func (f *fakeDocker) Events(ctx context.Context, _ client.EventsListOptions) client.EventsResult {
	return f.events(ctx)
}

func (f *fakeDocker) ContainerList(ctx context.Context, _ client.ContainerListOptions) (client.ContainerListResult, error) {
	items, err := f.list()
	return client.ContainerListResult{Items: items}, err
}

func (f *fakeDocker) ContainerCreate(context.Context, client.ContainerCreateOptions) (client.ContainerCreateResult, error) {
	f.t.Fatal("unexpected ContainerCreate")
	return client.ContainerCreateResult{}, nil
}

func (f *fakeDocker) ContainerStart(context.Context, string, client.ContainerStartOptions) (client.ContainerStartResult, error) {
	f.t.Fatal("unexpected ContainerStart")
	return client.ContainerStartResult{}, nil
}

func (f *fakeDocker) ContainerStop(context.Context, string, client.ContainerStopOptions) (client.ContainerStopResult, error) {
	f.t.Fatal("unexpected ContainerStop")
	return client.ContainerStopResult{}, nil
}

func (f *fakeDocker) ContainerRemove(context.Context, string, client.ContainerRemoveOptions) (client.ContainerRemoveResult, error) {
	f.t.Fatal("unexpected ContainerRemove")
	return client.ContainerRemoveResult{}, nil
}

func (f *fakeDocker) ContainerRename(context.Context, string, client.ContainerRenameOptions) (client.ContainerRenameResult, error) {
	f.t.Fatal("unexpected ContainerRename")
	return client.ContainerRenameResult{}, nil
}

func (f *fakeDocker) ImageInspect(context.Context, string, ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	return client.ImageInspectResult{}, nil
}

func (f *fakeDocker) NetworkConnect(context.Context, string, client.NetworkConnectOptions) (client.NetworkConnectResult, error) {
	f.t.Fatal("unexpected NetworkConnect")
	return client.NetworkConnectResult{}, nil
}

// fakeProvider is a func-field fake provider.
type fakeProvider struct {
	get func(path string) (provider.Secret, error)
}

func (p fakeProvider) Get(ctx context.Context, path string) (provider.Secret, error) {
	return p.get(path)
}

func (p fakeProvider) Version(ctx context.Context, path string) (string, error) {
	s, err := p.get(path)
	return s.Version, err
}

// jumpClock moves to a timer's deadline as soon as one is set, so that
// waits end at once in virtual time.
type jumpClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *jumpClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *jumpClock) TimerAt(deadline time.Time) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if deadline.After(c.now) {
		c.now = deadline
	}
	return firedTimer(c.now)
}

func (c *jumpClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type firedTimer time.Time

func (t firedTimer) C() <-chan time.Time {
	ch := make(chan time.Time, 1)
	ch <- time.Time(t)
	return ch
}
func (firedTimer) Stop() {}

// bed is one agent with a fake engine holding one managed container whose
// variable DB_PASSWORD refers to dso://app/db, served by a fake provider.
type bed struct {
	a       *Agent
	docker  *fakeDocker
	clk     *jumpClock
	mu      sync.Mutex
	started time.Time
	down    error  // the provider's failure, nil when up
	downFor int    // when > 0, the provider is up again after that many failed calls
	value   string // the provider's value when set, else canary
	got     []*initproc.Payload
}

const canary = "canary-7f3a9c-db-password"

func newBed(t *testing.T, cache *secretcache.Cache) *bed {
	b := &bed{clk: &jumpClock{now: time.Unix(1.7e9, 0)}}
	b.started = b.clk.Now()
	labels := map[string]string{compose.LabelManaged: "true", compose.LabelRefs: `{"DB_PASSWORD":"dso://app/db"}`,
		"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
	b.docker = &fakeDocker{t: t,
		inspect: func(id string) (container.InspectResponse, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			return container.InspectResponse{ID: id, Name: "/shop-web-1", Path: initproc.InitPath, Args: []string{"--", "app"},
				State:  &container.State{Running: true, StartedAt: b.started.Format(time.RFC3339Nano)},
				Config: &container.Config{Labels: labels}}, nil
		},
		exec: func(id string, p *initproc.Payload) error {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.got = append(b.got, p)
			return nil
		},
	}
	reg := &resolve.Registry{}
	reg.Register(config.ProviderLocal, func(name string, _ config.Provider) (provider.Provider, error) {
		return fakeProvider{get: func(path string) (provider.Secret, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.down != nil {
				if b.downFor > 0 {
					if b.downFor--; b.downFor == 0 {
						defer func() { b.down = nil }()
					}
				}
				return provider.Secret{}, &provider.Error{Provider: name, Path: path, Kind: b.down, Err: errors.New("dial tcp 127.0.0.1:8200: connection refused")}
			}
			if b.value != "" {
				return provider.Secret{Value: []byte(b.value), Version: "4"}, nil
			}
			return provider.Secret{Value: []byte(canary), Version: "3"}, nil
		}}, nil
	})
	set, err := reg.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Docker: b.docker, ID: "test", Providers: func(string) (*resolve.Set, error) { return set, nil }, Clock: b.clk, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	// The container was registered, as `docker dso up` does.
	if err := a.registry.add(state.Registered{ID: "c1", Project: "p", By: "caller"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Watcher().Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	b.a = a
	return b
}

func (b *bed) payloads() []*initproc.Payload {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*initproc.Payload(nil), b.got...)
}

func (b *bed) set(fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fn()
}

// TestDeliveryRetriedUntilProviderReturns has the provider down for the
// first attempts: the init is told why (provider and failure, no value),
// status lists the container as waiting, and the values arrive once the
// provider is back, within the init's deadline.
func TestDeliveryRetriedUntilProviderReturns(t *testing.T) {
	b := newBed(t, nil)
	b.set(func() { b.down, b.downFor = provider.ErrUnreachable, 3 })
	statusSeen := make(chan []string, 1)
	b.docker.exec = wrapExec(b.docker.exec, func(p *initproc.Payload) {
		if p.Waiting != "" && len(statusSeen) == 0 {
			st, _ := b.a.Status(context.Background())
			var w []string
			for _, x := range st.Waiting {
				w = append(w, x.Name+": "+x.Reason)
			}
			statusSeen <- w
		}
	})
	if err := b.a.Deliver(context.Background(), "c1"); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	ps := b.payloads()
	last := ps[len(ps)-1]
	if string(last.Env["DB_PASSWORD"]) != canary {
		t.Fatalf("the last message to the init holds no value: %+v", last)
	}
	var told []string
	for _, p := range ps[:len(ps)-1] {
		if p.Waiting == "" || len(p.Env) > 0 {
			t.Fatalf("a message before the values is not a waiting message: %+v", p)
		}
		told = append(told, p.Waiting)
		if strings.Contains(p.Waiting, canary) {
			t.Fatal("a waiting message holds the value")
		}
	}
	if len(told) == 0 || !strings.Contains(told[0], `provider "local"`) || !strings.Contains(told[0], "backend unreachable") {
		t.Fatalf("the init was told %q; want the provider and that it is unreachable", told)
	}
	if w := <-statusSeen; len(w) != 1 || !strings.Contains(w[0], "shop-web-1: ") || !strings.Contains(w[0], "unreachable") {
		t.Fatalf("status while waiting lists %q, want shop-web-1 and why", w)
	}
	if st, _ := b.a.Status(context.Background()); len(st.Waiting) != 0 {
		t.Fatalf("status still lists waiting containers after the delivery: %+v", st.Waiting)
	}
}

func wrapExec(next func(string, *initproc.Payload) error, before func(*initproc.Payload)) func(string, *initproc.Payload) error {
	return func(id string, p *initproc.Payload) error {
		before(p)
		return next(id, p)
	}
}

// TestDeliveryGivesUpAtInitDeadline keeps the provider down: the agent
// retries until the init's --timeout after the start, then stops with the
// provider's error.
func TestDeliveryGivesUpAtInitDeadline(t *testing.T) {
	b := newBed(t, nil)
	b.set(func() { b.down = provider.ErrDenied })
	err := b.a.Deliver(context.Background(), "c1")
	if err == nil || !errors.Is(err, provider.ErrDenied) {
		t.Fatalf("Deliver = %v, want access denied", err)
	}
	// It gives up when the next wait would pass the deadline: that wait is
	// at most the retries' 5 s cap, jittered by +50%.
	if elapsed := b.clk.Now().Sub(b.started); elapsed > initproc.DefaultTimeout || elapsed < initproc.DefaultTimeout-7500*time.Millisecond {
		t.Fatalf("gave up %s after the start, want just before the init's %s", elapsed, initproc.DefaultTimeout)
	}
}

// TestOneDeliveryPerStart has the start event and a second caller (a
// rotation, the agent's reconnection) deliver to the same start: one exec.
func TestOneDeliveryPerStart(t *testing.T) {
	b := newBed(t, nil)
	release := make(chan struct{})
	b.docker.exec = wrapExec(b.docker.exec, func(*initproc.Payload) { <-release })
	errs := make(chan error, 2)
	go func() { errs <- b.a.deliverStart(context.Background(), "c1", true) }()
	go func() { errs <- b.a.Deliver(context.Background(), "c1") }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(b.payloads()); n != 1 {
		t.Fatalf("%d deliveries to one start, want 1", n)
	}
	b.set(func() { b.started = b.started.Add(time.Second) }) // docker restart
	if err := b.a.Deliver(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if n := len(b.payloads()); n != 2 {
		t.Fatalf("%d deliveries after a second start, want 2", n)
	}
}

// TestCacheServesARestartDuringAnOutage delivers once, takes the provider
// down and restarts the container: the value comes from the cache, and
// status and health say so. Past the maximum age it is not served and the
// init is told why.
func TestCacheServesARestartDuringAnOutage(t *testing.T) {
	cache := secretcache.New(time.Hour, nil)
	defer cache.Close()
	b := newBed(t, cache)
	// The cache ages by the system clock here; the agent's jumps.
	if err := b.a.Deliver(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	b.set(func() { b.down = provider.ErrUnreachable; b.started = b.started.Add(time.Minute) })
	if err := b.a.Deliver(context.Background(), "c1"); err != nil {
		t.Fatalf("restart during the outage: %v", err)
	}
	ps := b.payloads()
	if len(ps) != 2 || string(ps[1].Env["DB_PASSWORD"]) != canary {
		t.Fatalf("the restart got %+v, want the cached value", ps[len(ps)-1])
	}
	st, _ := b.a.Status(context.Background())
	if len(st.Containers) != 1 || st.Containers[0].FromCache["local:app/db"].IsZero() {
		t.Fatalf("status does not say the value came from the cache: %+v", st.Containers)
	}
	h := b.a.Health(context.Background())
	if h.Health != "degraded" || !strings.Contains(strings.Join(h.Problems, "\n"), "local:app/db from the cache") {
		t.Fatalf("health %s %q, want degraded naming the cached secret", h.Health, h.Problems)
	}
	b.a.observe(watchResult(watchKey("", "local", "app/db"), "3"))
	if st, _ := b.a.Status(context.Background()); len(st.Containers[0].FromCache) != 0 {
		t.Fatalf("still from the cache after the provider confirmed the version: %+v", st.Containers[0].FromCache)
	}
}

func TestCacheTooOldIsNotServed(t *testing.T) {
	clk := clock.NewFakeClock(time.Unix(1.7e9, 0))
	cache := secretcache.New(time.Hour, clk)
	defer cache.Close()
	b := newBed(t, cache)
	if err := b.a.Deliver(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	b.set(func() { b.down = provider.ErrUnreachable; b.started = b.started.Add(time.Minute) })
	err := b.a.Deliver(context.Background(), "c1")
	if err == nil || !strings.Contains(err.Error(), "older than agent.cache.max_age") {
		t.Fatalf("Deliver = %v, want a refusal naming the maximum age", err)
	}
	var told string
	for _, p := range b.payloads()[1:] {
		if p.Waiting != "" {
			told = p.Waiting
		}
		if len(p.Env) > 0 {
			t.Fatal("a value older than the maximum age was delivered")
		}
	}
	if !strings.Contains(told, "backend unreachable") || !strings.Contains(told, "older than agent.cache.max_age (1h0m0s)") {
		t.Fatalf("the init was told %q, want the outage and the cache's age limit", told)
	}
}

func watchResult(key, version string) watch.Result {
	return watch.Result{Key: key, Version: version, At: time.Now()}
}

// TestCacheNotServedOnceTheProviderMovedOn: a poll saw a new version, then
// the provider went down before the rotation fetched it: a restart gets
// nothing rather than the old value, which would undo the rotation.
func TestCacheNotServedOnceTheProviderMovedOn(t *testing.T) {
	cache := secretcache.New(time.Hour, nil)
	defer cache.Close()
	b := newBed(t, cache)
	if err := b.a.Deliver(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	b.a.observe(watchResult(watchKey("", "local", "app/db"), "4"))
	b.set(func() { b.down = provider.ErrUnreachable; b.started = b.started.Add(time.Minute) })
	if err := b.a.Deliver(context.Background(), "c1"); err == nil {
		t.Fatal("the restart got the value of version 3 after the provider moved to version 4")
	}
}

// TestPinnedContainerGetsWhatItHad: the old container of a rotation,
// brought back by a rollback (pinned), is delivered the values it had,
// which the agent kept in its locked memory, not the provider's new ones.
func TestPinnedContainerGetsWhatItHad(t *testing.T) {
	b := newBed(t, nil)
	if err := b.a.Deliver(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	b.set(func() { b.value = "canary-new-value-4d1e" })
	b.a.mu.Lock()
	b.a.pinned["c1"] = true
	b.a.mu.Unlock()
	b.set(func() { b.started = b.started.Add(time.Minute) }) // stopped, started again
	if err := b.a.Deliver(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	ps := b.payloads()
	if got := string(ps[len(ps)-1].Env["DB_PASSWORD"]); got != canary {
		t.Fatalf("the pinned container got %q, want the value it had", got)
	}
	if bytes.Contains(mustKept(t, b.a, "c1"), []byte("canary-new-value-4d1e")) {
		t.Fatal("the new value replaced what the pinned container had")
	}
}

func mustKept(t *testing.T, a *Agent, id string) []byte {
	t.Helper()
	blob, ok := a.kept.Kept(id)
	if !ok {
		t.Fatalf("nothing kept for %s", id)
	}
	return blob
}

// TestDeferredStartWaitsForTheRotation: the start of a container deferred
// by a stop-first rotation (its old container still stopping) gets no
// delivery from the start event; the rotation's Deliver hands it its
// secrets, once.
func TestDeferredStartWaitsForTheRotation(t *testing.T) {
	b := newBed(t, nil)
	b.a.deferDelivery("c1")
	if err := b.a.deliverStart(context.Background(), "c1", true); err != nil {
		t.Fatal(err)
	}
	b.a.serveRunning(context.Background(), "c1")
	if n := len(b.payloads()); n != 0 {
		t.Fatalf("%d deliveries to a deferred start before the rotation's, want 0", n)
	}
	if err := b.a.Deliver(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if n := len(b.payloads()); n != 1 {
		t.Fatalf("%d deliveries after the rotation's, want 1", n)
	}
}

// TestUnsettledReplacementIsNotServed: a container found running under a
// rotation's temporary name, that no rotation of this agent is taking, is
// left to recovery; under its compose name it is served.
func TestUnsettledReplacementIsNotServed(t *testing.T) {
	b := newBed(t, nil)
	inspect := b.docker.inspect
	name := "/shop-web-1-dso-r7"
	b.docker.inspect = func(id string) (container.InspectResponse, error) {
		c, err := inspect(id)
		c.Name = name
		return c, err
	}
	b.a.serveRunning(context.Background(), "c1")
	if n := len(b.payloads()); n != 0 {
		t.Fatalf("%d deliveries to an unsettled replacement, want 0", n)
	}
	b.a.inflight(7, true)
	b.a.serveRunning(context.Background(), "c1")
	if n := len(b.payloads()); n != 1 {
		t.Fatalf("%d deliveries to the replacement of a rotation in flight, want 1", n)
	}
}
