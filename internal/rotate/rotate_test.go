package rotate

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/state"
)

// engine is an in-memory stand-in for the few engine calls a replacement
// makes: containers with a name, labels, a running flag and an address.
type engine struct {
	mu     sync.Mutex
	seq    int
	byID   map[string]*fakeContainer
	failOn string // a call that fails: "start:NAME"
	fails  int    // how many times failOn fails (0: always)
}

// failing reports whether call (such as "start:NAME") fails now.
func (e *engine) failing(call string) bool {
	if e.failOn != call {
		return false
	}
	if e.fails > 0 {
		if e.fails--; e.fails == 0 {
			e.failOn = ""
		}
	}
	return true
}

type fakeContainer struct {
	id, name string
	labels   map[string]string
	running  bool
	ip       netip.Addr
	health   string
	stopWait *int   // Config.StopTimeout
	pidMode  string // HostConfig.PidMode
	paused   bool
}

func newEngine() *engine { return &engine{byID: map[string]*fakeContainer{}} }

func (e *engine) add(name string, labels map[string]string, running bool) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	id := fmt.Sprintf("%064d", e.seq)
	e.byID[id] = &fakeContainer{id: id, name: name, labels: labels, running: running, ip: netip.AddrFrom4([4]byte{172, 18, 0, byte(e.seq)})}
	return id
}

func (e *engine) find(ref string) *fakeContainer {
	if c, ok := e.byID[ref]; ok {
		return c
	}
	for _, c := range e.byID {
		if c.name == ref {
			return c
		}
	}
	return nil
}

var errNotFound = cerrdefs.ErrNotFound.WithMessage("No such container")

func (e *engine) ContainerInspect(_ context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.find(id)
	if c == nil {
		return client.ContainerInspectResult{}, errNotFound
	}
	st := &container.State{Running: c.running, Paused: c.paused}
	if c.health != "" {
		st.Health = &container.Health{Status: container.HealthStatus(c.health)}
	}
	return client.ContainerInspectResult{Container: container.InspectResponse{
		ID: c.id, Name: "/" + c.name, State: st,
		Config:     &container.Config{Labels: c.labels, StopTimeout: c.stopWait},
		HostConfig: &container.HostConfig{NetworkMode: "shop_default", PidMode: container.PidMode(c.pidMode)},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{
			"shop_default": {IPAddress: c.ip, Aliases: []string{c.labels[labelService]}},
		}},
	}}, nil
}

func (e *engine) ContainerList(_ context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out client.ContainerListResult
	for _, c := range e.byID {
		if !matches(c, opts.Filters) || !opts.All && !c.running {
			continue
		}
		st := container.StateExited
		if c.running {
			st = container.StateRunning
		}
		out.Items = append(out.Items, container.Summary{ID: c.id, Names: []string{"/" + c.name}, Labels: c.labels, State: st})
	}
	slices.SortFunc(out.Items, func(a, b container.Summary) int { return strings.Compare(a.Names[0], b.Names[0]) })
	return out, nil
}

// matches applies the label and status filters the engine would.
func matches(c *fakeContainer, f client.Filters) bool {
	for l := range f["label"] {
		k, v, hasValue := strings.Cut(l, "=")
		got, ok := c.labels[k]
		if !ok || hasValue && got != v {
			return false
		}
	}
	return !f["status"]["running"] || c.running
}

func (e *engine) ContainerCreate(_ context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error) {
	e.mu.Lock()
	if e.find(opts.Name) != nil {
		e.mu.Unlock()
		return client.ContainerCreateResult{}, errors.New("Conflict: name in use")
	}
	e.mu.Unlock()
	return client.ContainerCreateResult{ID: e.add(opts.Name, opts.Config.Labels, false)}, nil
}

func (e *engine) ContainerStart(_ context.Context, id string, _ client.ContainerStartOptions) (client.ContainerStartResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.find(id)
	if c == nil {
		return client.ContainerStartResult{}, errNotFound
	}
	if e.failing("start:" + c.name) {
		return client.ContainerStartResult{}, errors.New("it cannot start")
	}
	c.running = true
	return client.ContainerStartResult{}, nil
}

func (e *engine) ContainerStop(_ context.Context, id string, _ client.ContainerStopOptions) (client.ContainerStopResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.find(id)
	if c == nil {
		return client.ContainerStopResult{}, errNotFound
	}
	c.running = false
	return client.ContainerStopResult{}, nil
}

func (e *engine) ContainerRemove(_ context.Context, id string, _ client.ContainerRemoveOptions) (client.ContainerRemoveResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.find(id)
	if c == nil {
		return client.ContainerRemoveResult{}, errNotFound
	}
	delete(e.byID, c.id)
	return client.ContainerRemoveResult{}, nil
}

func (e *engine) ContainerRename(_ context.Context, id string, opts client.ContainerRenameOptions) (client.ContainerRenameResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.find(id)
	if c == nil {
		return client.ContainerRenameResult{}, errNotFound
	}
	if e.failing("rename:" + c.name) {
		return client.ContainerRenameResult{}, errors.New("the engine is out of reach")
	}
	if other := e.find(opts.NewName); other != nil && other != c {
		return client.ContainerRenameResult{}, errors.New("Conflict: name in use")
	}
	c.name = opts.NewName
	return client.ContainerRenameResult{}, nil
}

func (e *engine) ImageInspect(context.Context, string, ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	return client.ImageInspectResult{}, nil
}

func (e *engine) NetworkConnect(context.Context, string, client.NetworkConnectOptions) (client.NetworkConnectResult, error) {
	return client.NetworkConnectResult{}, nil
}

// service returns the containers of the service "web", by name.
func (e *engine) service() map[string]bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]bool{}
	for _, c := range e.byID {
		if c.labels[labelService] == "web" {
			out[c.name] = c.running
		}
	}
	return out
}

// fakeProxy records the proxy's backends.
type fakeProxy struct {
	mu       sync.Mutex
	backends []string
	holding  bool
}

func (p *fakeProxy) Set(_ context.Context, _ string, b []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends, p.holding = b, false
	return nil
}

func (p *fakeProxy) Hold(context.Context, string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holding = true
	return nil
}

func (p *fakeProxy) Drain(context.Context, string, string, time.Duration) error { return nil }
func (p *fakeProxy) Probe(context.Context, string, string, time.Duration) error { return nil }

// memJournal keeps journal entries in memory.
type memJournal struct {
	mu      sync.Mutex
	entries map[uint64]*state.Rotation
}

func (j *memJournal) UpdateRotation(id uint64, fn func(*state.Rotation)) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, ok := j.entries[id]
	if !ok {
		return fmt.Errorf("rotation %d is not in the journal", id)
	}
	fn(r)
	return nil
}

// crash stands for the agent dying at a step.
type crash struct{ step string }

type setup struct {
	eng     *engine
	proxy   *fakeProxy
	journal *memJournal
	r       *Replacer
	old     string
	steps   []string
}

func newSetup(t *testing.T, labels map[string]string) *setup {
	s := &setup{eng: newEngine(), proxy: &fakeProxy{}, journal: &memJournal{entries: map[uint64]*state.Rotation{}}}
	l := map[string]string{labelProject: "shop", labelService: "web"}
	for k, v := range labels {
		l[k] = v
	}
	s.old = s.eng.add("shop-web-1", l, true)
	s.eng.add("shop-web-dso-proxy-1", map[string]string{labelProject: "shop", LabelProxyFor: "web"}, true)
	s.journal.entries[7] = &state.Rotation{ID: 7, OldContainer: s.old, Result: state.ResultRunning}
	s.r = &Replacer{Docker: s.eng, Journal: s.journal, Proxy: s.proxy, Settle: time.Millisecond, Log: nil,
		Deliver: func(ctx context.Context, id string) error { return nil },
		BeforeStep: func(_ Strategy, step string) {
			s.steps = append(s.steps, step)
		}}
	return s
}

func (s *setup) entry() state.Rotation {
	s.journal.mu.Lock()
	defer s.journal.mu.Unlock()
	return *s.journal.entries[7]
}

// TestRollingSwapSteps: a rolling swap behind a proxy takes its steps in
// order, switches the proxy to the new container, and leaves one running
// container under the compose name, the proxy back on the service name.
func TestRollingSwapSteps(t *testing.T) {
	s := newSetup(t, nil)
	newID, err := s.r.Replace(t.Context(), Job{Journal: 7, Old: s.old, Strategy: Rolling})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{StepCreate, StepStart, StepHealth, StepSwitch, StepDrain, StepRemoveOld, StepRename}
	if !slices.Equal(s.steps, want) {
		t.Errorf("steps %v, want %v", s.steps, want)
	}
	if got := s.eng.service(); len(got) != 1 || !got["shop-web-1"] {
		t.Errorf("service containers %v, want shop-web-1 running only", got)
	}
	if e := s.entry(); e.NewContainer != newID || e.Order != string(StartFirst) || e.Name != "shop-web-1" || e.TempName != "shop-web-1-dso-r7" {
		t.Errorf("journal %+v", e)
	}
	if !slices.Equal(s.proxy.backends, []string{"web"}) {
		t.Errorf("proxy backends %v, want the service name", s.proxy.backends)
	}
}

// TestStatefulGoesStopFirst: a writable volume means stop-first, with the
// proxy holding new connections meanwhile.
func TestStatefulGoesStopFirst(t *testing.T) {
	s := newSetup(t, map[string]string{LabelOrder: string(StopFirst)})
	held := false
	s.r.Deliver = func(ctx context.Context, id string) error { held = s.proxy.holding; return nil }
	if _, err := s.r.Replace(t.Context(), Job{Journal: 7, Old: s.old, Strategy: Rolling}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(s.steps, StepStopOld) || slices.Contains(s.steps, StepDrain) {
		t.Errorf("steps %v: want stop-old and no drain", s.steps)
	}
	if !held {
		t.Errorf("the proxy did not hold new connections while no container ran")
	}
}

// TestRestartStartsWhileOldStops: restart behind a proxy is stop-first;
// with Defer the engine starts the new container while the old one stops,
// and the new one gets its secrets only once the old one has stopped. An
// old container with a long grace period is stopped before the new one
// starts, so that the new one's init does not give up waiting.
func TestRestartStartsWhileOldStops(t *testing.T) {
	for _, grace := range []int{10, 45} {
		s := newSetup(t, nil)
		s.eng.find(s.old).stopWait = &grace
		var deferred []string
		s.r.Defer = func(id string) { deferred = append(deferred, id) }
		oldRunning := true
		s.r.Deliver = func(ctx context.Context, id string) error {
			s.eng.mu.Lock()
			defer s.eng.mu.Unlock()
			oldRunning = s.eng.find(s.old).running
			return nil
		}
		newID, err := s.r.Replace(t.Context(), Job{Journal: 7, Old: s.old, Strategy: Restart})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{StepCreate, StepStopOld, StepStart, StepHealth, StepSwitch, StepRemoveOld, StepRename}
		if !slices.Equal(s.steps, want) {
			t.Errorf("grace %ds: steps %v, want %v", grace, s.steps, want)
		}
		wantDeferred := []string{newID}
		if grace > 30 {
			wantDeferred = nil
		}
		if !slices.Equal(deferred, wantDeferred) {
			t.Errorf("grace %ds: deferred %v, want %v", grace, deferred, wantDeferred)
		}
		if oldRunning {
			t.Errorf("grace %ds: the new container got its secrets while the old one ran", grace)
		}
		if s.proxy.holding || !slices.Equal(s.proxy.backends, []string{"web"}) {
			t.Errorf("grace %ds: proxy holding %v backends %v", grace, s.proxy.holding, s.proxy.backends)
		}
	}
}

// TestFailedStartRollsBack: the new container cannot start (started after
// the old one stopped, or while it stops); it is removed, the old one
// serves, the proxy is on the service.
func TestFailedStartRollsBack(t *testing.T) {
	for _, overlap := range []bool{false, true} {
		s := newSetup(t, map[string]string{LabelOrder: string(StopFirst)})
		if overlap {
			s.r.Defer = func(string) {}
		}
		s.eng.failOn = "start:shop-web-1-dso-r7"
		if _, err := s.r.Replace(t.Context(), Job{Journal: 7, Old: s.old, Strategy: Rolling}); err == nil || !strings.Contains(err.Error(), "it cannot start") {
			t.Fatalf("overlap %v: error %v", overlap, err)
		}
		if got := s.eng.service(); len(got) != 1 || !got["shop-web-1"] {
			t.Errorf("overlap %v: service containers %v, want the old one running only", overlap, got)
		}
		if s.proxy.holding || !slices.Equal(s.proxy.backends, []string{"web"}) {
			t.Errorf("overlap %v: proxy holding %v backends %v", overlap, s.proxy.holding, s.proxy.backends)
		}
	}
}

// TestJoinedContainerIsNotReplaced: a container whose namespaces another
// container of the project shares is not replaced (the other would be left
// in a removed container's namespaces): the rotation fails at once, naming
// it, and nothing changed.
func TestJoinedContainerIsNotReplaced(t *testing.T) {
	s := newSetup(t, nil)
	side := s.eng.add("shop-side-1", map[string]string{labelProject: "shop", labelService: "side"}, true)
	s.eng.byID[side].pidMode = "container:" + s.old
	_, err := s.r.Rotate(t.Context(), Job{Journal: 7, Old: s.old}, Decision{Strategy: Rolling}, nil)
	if err == nil || !strings.Contains(err.Error(), "shop-side-1 (pid) share the namespaces") || !strings.Contains(err.Error(), `give service "web" strategy signal or none`) {
		t.Fatalf("error %v, want the refusal naming shop-side-1", err)
	}
	if len(s.steps) != 0 {
		t.Errorf("steps %v, want none", s.steps)
	}
	if got := s.eng.service(); len(got) != 1 || !got["shop-web-1"] {
		t.Errorf("service containers %v, want the old one running only", got)
	}
}

// TestPausedContainerIsNotReplaced: a paused container is not replaced (a
// replacement would run where its user paused it): the rotation fails at
// once, saying so and how to get the new values, and nothing changed.
func TestPausedContainerIsNotReplaced(t *testing.T) {
	s := newSetup(t, nil)
	s.eng.byID[s.old].paused = true
	replacing := false
	_, err := s.r.Rotate(t.Context(), Job{Journal: 7, Old: s.old, Replacing: func() { replacing = true }}, Decision{Strategy: Restart}, nil)
	if err == nil || !strings.Contains(err.Error(), "paused") || !strings.Contains(err.Error(), "docker dso up --force-recreate") {
		t.Fatalf("error %v, want the refusal of a paused container", err)
	}
	if len(s.steps) != 0 {
		t.Errorf("steps %v, want none", s.steps)
	}
	// Its values stay the current ones: a later restart gets them.
	if replacing {
		t.Error("Replacing was called for a container the rotation refuses to replace")
	}
}

// TestOldRemovedDuringRotation: the old container is removed by someone
// else (docker compose down) after the swap stopped it, and the new one
// fails to start: the undo has nothing to bring back and ends, rather than
// trying again for ever.
func TestOldRemovedDuringRotation(t *testing.T) {
	s := newSetup(t, map[string]string{LabelOrder: string(StopFirst)})
	s.eng.failOn = "start:shop-web-1-dso-r7"
	s.r.BeforeStep = func(_ Strategy, step string) {
		if step == StepStart {
			s.eng.ContainerRemove(t.Context(), s.old, client.ContainerRemoveOptions{Force: true})
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := s.r.Replace(ctx, Job{Journal: 7, Old: s.old, Strategy: Rolling})
	if err == nil || errors.Is(err, ErrInterrupted) || !strings.Contains(err.Error(), "start") {
		t.Fatalf("error %v, want the new container's failed start", err)
	}
	if got := s.eng.service(); len(got) != 0 {
		t.Errorf("service containers %v, want none: the old one was removed, the new one failed", got)
	}
}

// TestRotateEndsWhenTheContainerIsRemoved: the container is removed during
// its rotation (docker compose down) and the new one fails: the rotation
// ends with ErrRemoved at once, not after 3 attempts that cannot work
// (reported as a failure and notified), and so does a rotation of a
// container already gone.
func TestRotateEndsWhenTheContainerIsRemoved(t *testing.T) {
	s := newSetup(t, map[string]string{LabelOrder: string(StopFirst)})
	s.eng.failOn = "start:shop-web-1-dso-r7"
	s.r.RetryBackoff = time.Hour // a second attempt would outlast ctx
	s.r.BeforeStep = func(_ Strategy, step string) {
		if step == StepStart {
			s.eng.ContainerRemove(t.Context(), s.old, client.ContainerRemoveOptions{Force: true})
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := s.r.Rotate(ctx, Job{Journal: 7, Old: s.old}, Decision{Strategy: Rolling}, nil); err != ErrRemoved {
		t.Fatalf("error %v, want ErrRemoved", err)
	}
	if _, err := s.r.Rotate(ctx, Job{Journal: 8, Old: s.old}, Decision{Strategy: Rolling}, nil); err != ErrRemoved {
		t.Fatalf("rotating a removed container: error %v, want ErrRemoved", err)
	}
}

// TestRotateRetriesOnItsClock: a replacement that keeps failing is tried
// 3 times, waiting between attempts on the Replacer's clock (RetryBackoff,
// then about twice that, jittered by half), and the old container serves.
func TestRotateRetriesOnItsClock(t *testing.T) {
	s := newSetup(t, map[string]string{LabelOrder: string(StopFirst)})
	s.eng.failOn = "start:shop-web-1-dso-r7"
	clk := clock.NewFakeClock(time.Unix(1.7e9, 0))
	s.r.Clock, s.r.RetryBackoff = clk, 2*time.Second
	done := make(chan error, 1)
	var replacing atomic.Int32
	go func() {
		_, err := s.r.Rotate(t.Context(), Job{Journal: 7, Old: s.old, Replacing: func() { replacing.Add(1) }}, Decision{Strategy: Rolling}, nil)
		done <- err
	}()
	for i, want := range []time.Duration{2 * time.Second, 4 * time.Second} {
		clk.WaitArmed()
		wait := clk.NextDeadline().Sub(clk.Now())
		if wait < want/2 || wait > want*3/2 {
			t.Errorf("wait %d: %v, want %v ±50%%", i+1, wait, want)
		}
		clk.Advance(wait)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Fatalf("error %v, want after 3 attempts", err)
	}
	if got := s.eng.service(); len(got) != 1 || !got["shop-web-1"] {
		t.Errorf("service containers %v, want the old one running only", got)
	}
	if n := replacing.Load(); n != 1 {
		t.Errorf("Replacing called %d times, want once, before the first attempt", n)
	}
}

// TestFailedRollbackIsRetried: bringing the old container back fails
// (the engine is out of reach) until it works: the rotation is not
// reported before the old container serves again.
func TestFailedRollbackIsRetried(t *testing.T) {
	s := newSetup(t, map[string]string{LabelOrder: string(StopFirst)})
	s.r.RetryBackoff = time.Millisecond
	s.r.Deliver = func(ctx context.Context, id string) error {
		if id != s.old {
			return errors.New("it gets no secrets")
		}
		return nil
	}
	s.eng.failOn, s.eng.fails = "start:shop-web-1", 3
	if _, err := s.r.Replace(t.Context(), Job{Journal: 7, Old: s.old, Strategy: Rolling}); err == nil || !strings.Contains(err.Error(), "it gets no secrets") {
		t.Fatalf("error %v", err)
	}
	if s.eng.fails != 0 {
		t.Errorf("the old container's start was not tried until it worked")
	}
	if got := s.eng.service(); len(got) != 1 || !got["shop-web-1"] {
		t.Errorf("service containers %v, want the old one running only", got)
	}
	if s.proxy.holding || !slices.Equal(s.proxy.backends, []string{"web"}) {
		t.Errorf("proxy holding %v backends %v", s.proxy.holding, s.proxy.backends)
	}
}

// TestNewContainerDiesAfterSwitch: the new container dies after the
// switch, while the old one drains: the old one is kept and serves again.
func TestNewContainerDiesAfterSwitch(t *testing.T) {
	s := newSetup(t, nil)
	s.r.BeforeStep = func(_ Strategy, step string) {
		if step == StepDrain {
			s.eng.ContainerStop(t.Context(), "shop-web-1-dso-r7", client.ContainerStopOptions{})
		}
	}
	if _, err := s.r.Replace(t.Context(), Job{Journal: 7, Old: s.old, Strategy: Rolling}); err == nil || !strings.Contains(err.Error(), "after the switch: the new container stopped") {
		t.Fatalf("error %v", err)
	}
	if got := s.eng.service(); len(got) != 1 || !got["shop-web-1"] || s.eng.find("shop-web-1").id != s.old {
		t.Errorf("service containers %v, want the old one running only", got)
	}
	if !slices.Equal(s.proxy.backends, []string{"web"}) {
		t.Errorf("proxy backends %v", s.proxy.backends)
	}
}

// TestFailureAfterRemovalGoesForward: once the old container is being
// removed there is no way back: a failure then (the engine out of reach at
// the rename) is retried until the swap is finished.
func TestFailureAfterRemovalGoesForward(t *testing.T) {
	s := newSetup(t, nil)
	s.r.RetryBackoff = time.Millisecond
	s.eng.failOn, s.eng.fails = "rename:shop-web-1-dso-r7", 2
	newID, err := s.r.Replace(t.Context(), Job{Journal: 7, Old: s.old, Strategy: Rolling})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.eng.service(); len(got) != 1 || !got["shop-web-1"] || s.eng.find("shop-web-1").id != newID {
		t.Errorf("service containers %v, want the new one running only, under the compose name", got)
	}
	if !slices.Equal(s.proxy.backends, []string{"web"}) {
		t.Errorf("proxy backends %v", s.proxy.backends)
	}
}

// TestRecoverAtEveryStep: the agent dies at each step of each kind of
// swap; Recover leaves exactly one running container under the compose
// name (the new one when past the switch), no temporary one, the proxy on
// the service; a second Recover changes nothing.
func TestRecoverAtEveryStep(t *testing.T) {
	recovered := 0
	defer func() {
		// start-first rolling takes 7 steps, stop-first 7, restart behind
		// its proxy (stop-first) 7.
		if recovered != 21 {
			t.Errorf("recovered from %d crash points, want 21", recovered)
		}
	}()
	for _, tc := range []struct {
		strategy Strategy
		labels   map[string]string
	}{{Rolling, nil}, {Rolling, map[string]string{LabelOrder: string(StopFirst)}}, {Restart, nil}} {
		for _, step := range Steps {
			s := newSetup(t, tc.labels)
			s.r.BeforeStep = func(_ Strategy, at string) {
				if at == step {
					panic(crash{step})
				}
			}
			func() {
				defer func() {
					if r := recover(); r != nil {
						if _, ok := r.(crash); !ok {
							panic(r)
						}
					}
				}()
				s.r.Replace(t.Context(), Job{Journal: 7, Old: s.old, Strategy: tc.strategy})
			}()
			e := s.entry()
			if e.Step != step {
				continue // this kind of swap does not take that step
			}
			recovered++
			name := fmt.Sprintf("%s %v at %s", tc.strategy, tc.labels, step)
			s.r.BeforeStep = nil
			s.proxy.backends = []string{"stale"}
			rec, err := s.r.Recover(t.Context(), e)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got := s.eng.service(); len(got) != 1 || !got["shop-web-1"] {
				t.Errorf("%s: service containers %v, want shop-web-1 running only", name, got)
			}
			if wantNew := committed(step); rec.Completed != wantNew || (rec.Container == s.old) == wantNew {
				t.Errorf("%s: completed %v, container old=%v", name, rec.Completed, rec.Container == s.old)
			}
			if tc.strategy == Rolling && !slices.Equal(s.proxy.backends, []string{"web"}) {
				t.Errorf("%s: proxy backends %v", name, s.proxy.backends)
			}
			if _, err := s.r.Recover(t.Context(), e); err != nil {
				t.Errorf("%s: recovering twice: %v", name, err)
			}
			if got := s.eng.service(); len(got) != 1 || !got["shop-web-1"] {
				t.Errorf("%s: after a second recovery: %v", name, got)
			}
		}
	}
}

// TestSweepTemporaryNames: leftovers of earlier versions and of this one
// are removed when the replica runs, renamed when it does not; a
// temporary name is never the base of another.
func TestSweepTemporaryNames(t *testing.T) {
	e := newEngine()
	l := map[string]string{labelProject: "shop", labelService: "web"}
	e.add("shop-web-1", l, true)
	e.add("shop-web-1-dso-730834712", l, false)
	e.add("shop-web-1-dso-r3-dso-r4", l, false)
	e.add("shop-web-2-dso-r9", l, true)
	e.add("shop-web-1-dso-r12", l, true) // its rotation is in flight
	r := &Replacer{Docker: e, Deliver: func(context.Context, string) error { return nil }}
	if _, err := r.Sweep(t.Context(), client.Filters{}, func(id uint64) bool { return id == 12 }); err != nil {
		t.Fatal(err)
	}
	if got := e.service(); len(got) != 3 || !got["shop-web-1"] || !got["shop-web-2"] || !got["shop-web-1-dso-r12"] {
		t.Errorf("containers %v", got)
	}
	if CanonicalName("/shop-web-1-dso-r3-dso-12") != "shop-web-1" {
		t.Errorf("CanonicalName keeps a temporary suffix")
	}
}

func TestDecide(t *testing.T) {
	cfg := &config.Config{Defaults: config.Defaults{Rotation: config.Rotation{Enabled: true, Strategy: config.StrategyRestart}},
		Secrets: []config.Secret{{Name: "db", Rotation: config.Rotation{Enabled: true, Strategy: config.StrategySignal, Signal: "SIGUSR1"}}}}
	for _, tt := range []struct {
		labels map[string]string
		cfg    *config.Config
		want   Decision
	}{
		{nil, nil, Decision{Rolling, "SIGHUP"}},
		{map[string]string{"dso.update.strategy": "none"}, nil, Decision{None, "SIGHUP"}},
		{nil, cfg, Decision{Restart, ""}},
		{map[string]string{"dso.secrets": "db"}, cfg, Decision{Signal, "SIGUSR1"}},
	} {
		got, err := Decide(tt.labels, tt.cfg)
		if err != nil || got.Strategy != tt.want.Strategy || tt.want.Signal != "" && got.Signal != tt.want.Signal {
			t.Errorf("Decide(%v) = %+v, %v; want %+v", tt.labels, got, err, tt.want)
		}
	}
	if _, err := Decide(map[string]string{"dso.update.strategy": "rollin"}, nil); err == nil || !strings.Contains(err.Error(), `unknown strategy "rollin"`) {
		t.Errorf("an unknown strategy: %v", err)
	}
}
