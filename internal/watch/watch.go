// Package watch notices when watched secrets change. Each key is polled
// with a cheap version check (never a value fetch) at an interval that
// backs off up to 4x while nothing changes and resets on change, with
// jitter so that keys do not poll in lockstep. All keys share one timer
// heap and a small pool of workers, not a goroutine each, and a check may
// run up to 1/60 of the interval early so that keys due close together
// share one wake-up of the loop. Changes that
// arrive close together are delivered as one batch, so that a container
// using three changed secrets is rotated once. Trigger asks for an
// immediate check (webhooks, the local vault file changing); changes those
// checks find are delivered as soon as every triggered check has ended,
// without waiting out the settle window.
package watch

import (
	"container/heap"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dso-project/dso/internal/clock"
)

// VersionFunc returns the current version of key: the backend's version id,
// or a keyed fingerprint of the value where the backend has none.
type VersionFunc func(ctx context.Context, key string) (string, error)

// Change is one key whose version moved from Old to New.
type Change struct {
	Key string
	Old string
	New string
}

// Result describes one finished check, for metrics and state.
type Result struct {
	Key      string
	Version  string // empty when Err is set
	Err      error
	Changed  bool
	At       time.Time
	Duration time.Duration
}

// KeyStatus is what the watcher knows of one key.
type KeyStatus struct {
	Key       string
	Version   string
	LastCheck time.Time
	NextCheck time.Time // zero while a check runs
	Interval  time.Duration
	Failing   bool
}

// Config sets up a Watcher. Zero fields take the defaults shown.
type Config struct {
	Check        VersionFunc   // required
	Interval     time.Duration // base polling interval: 30s
	MaxBackoff   int           // the interval grows up to this many times the base while unchanged: 4
	Jitter       float64       // fraction of the interval added or removed at random: 0.1
	Settle       time.Duration // how long to gather changes into one batch (at most, after a Trigger): 200ms
	Concurrency  int           // checks in flight at once: 4
	CheckTimeout time.Duration // bound on one check: 30s
	Clock        clock.Clock   // RealClock
	Seed         uint64        // jitter seed; random when 0
	// Observe, when set, is called from the watcher's loop after every
	// check. It must return quickly.
	Observe func(Result)
}

// Watcher polls a changing set of keys. Its methods are safe to call from
// any goroutine, before or during Run.
type Watcher struct {
	cfg  Config
	rng  *rand.Rand
	out  chan []Change
	kick chan struct{}
	snap chan chan []KeyStatus

	mu  sync.Mutex
	ops []op
}

type opKind uint8

const (
	opAdd opKind = iota
	opRemove
	opTrigger
	opTriggerAll
)

type op struct {
	kind    opKind
	key     string
	version string
}

// New checks cfg and returns a Watcher; call Run to start it.
func New(cfg Config) (*Watcher, error) {
	if cfg.Check == nil {
		return nil, errors.New("watch: no version check function")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.MaxBackoff < 1 {
		cfg.MaxBackoff = 4
	}
	if cfg.Jitter < 0 || cfg.Jitter >= 1 {
		return nil, errors.New("watch: jitter must be in [0, 1)")
	}
	if cfg.Jitter == 0 {
		cfg.Jitter = 0.1
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 200 * time.Millisecond
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &Watcher{
		cfg:  cfg,
		rng:  rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		out:  make(chan []Change),
		kick: make(chan struct{}, 1),
		snap: make(chan chan []KeyStatus),
	}, nil
}

// Add watches key. knownVersion is the version the containers hold (from
// the state store): a different version at the first check is a change.
// With knownVersion empty, the first check only sets the baseline.
func (w *Watcher) Add(key, knownVersion string) {
	w.push(op{kind: opAdd, key: key, version: knownVersion})
}

// Remove stops watching key.
func (w *Watcher) Remove(key string) { w.push(op{kind: opRemove, key: key}) }

// Trigger asks for an immediate check of the given keys, or of every key
// when none is given. Unknown keys are ignored.
func (w *Watcher) Trigger(keys ...string) {
	if len(keys) == 0 {
		w.push(op{kind: opTriggerAll})
		return
	}
	for _, k := range keys {
		w.push(op{kind: opTrigger, key: k})
	}
}

func (w *Watcher) push(o op) {
	w.mu.Lock()
	w.ops = append(w.ops, o)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Changes delivers batches of changes. A batch not yet received grows with
// later changes, so a slow reader gets fewer, larger batches.
func (w *Watcher) Changes() <-chan []Change { return w.out }

// Snapshot returns the status of every key, ordered by key. It needs Run
// to be running.
func (w *Watcher) Snapshot(ctx context.Context) ([]KeyStatus, error) {
	reply := make(chan []KeyStatus, 1)
	select {
	case w.snap <- reply:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case s := <-reply:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// entry is one watched key. Its times are offsets from the loop's base
// (monotonic, 8 bytes each instead of a time.Time's 24): an agent may
// watch 10,000 keys.
type entry struct {
	key       string
	version   string
	due       time.Duration
	lastCheck time.Duration
	idx       int32 // position in the heap, -1 when out of it
	mult      uint8
	inflight  bool
	again     bool // triggered while in flight: check again at once
	triggered bool // a Trigger asked for the next check
	removed   bool // removed while in flight
	failing   bool
	checked   bool // lastCheck is set
}

type dueHeap []*entry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = int32(i), int32(j)
}
func (h *dueHeap) Push(x any) {
	e := x.(*entry)
	e.idx = int32(len(*h))
	*h = append(*h, e)
}
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.idx = -1
	return e
}

type loop struct {
	w        *Watcher
	base     time.Time // entries' times are offsets from it
	slack    time.Duration
	entries  map[string]*entry
	heap     dueHeap
	inflight int
	pending  map[string]Change // gathered during the settle window
	settleAt time.Time
	// triggered counts the entries whose triggered check has not ended;
	// early is set when such a check found a change: the batch goes out
	// once triggered is 0, before settleAt.
	triggered int
	early     bool
	ready     []Change // flushed, waiting for the reader
}

// Run polls until ctx is cancelled, then waits for its workers and returns
// nil. It must be called once.
func (w *Watcher) Run(ctx context.Context) error {
	// A check may run up to slack early so that keys due close together
	// share one wake-up: 10,000 keys polled every 2 minutes wake the loop
	// about twice a second, not 83 times.
	l := &loop{w: w, base: w.cfg.Clock.Now(), slack: w.cfg.Interval / 60, entries: map[string]*entry{}, pending: map[string]Change{}}
	jobs := make(chan string, w.cfg.Concurrency)
	results := make(chan Result, w.cfg.Concurrency)
	var wg sync.WaitGroup
	for range w.cfg.Concurrency {
		wg.Go(func() {
			for key := range jobs {
				results <- w.check(ctx, key)
			}
		})
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()

	l.applyOps()
	for {
		now := w.cfg.Clock.Now()
		l.dispatch(now, jobs)
		l.flush(now)
		var t clock.Timer
		var timerC <-chan time.Time
		if deadline := l.deadline(); !deadline.IsZero() {
			t = w.cfg.Clock.TimerAt(deadline)
			timerC = t.C()
		}
		done := l.wait(ctx, timerC, results)
		if t != nil {
			t.Stop()
		}
		if done {
			return nil
		}
	}
}

// wait handles one event; it returns true when ctx is done.
func (l *loop) wait(ctx context.Context, timerC <-chan time.Time, results <-chan Result) bool {
	var out chan<- []Change
	if len(l.ready) > 0 {
		out = l.w.out
	}
	select {
	case <-ctx.Done():
		return true
	case <-timerC:
	case <-l.w.kick:
		l.applyOps()
	case r := <-results:
		l.done(r)
	case out <- l.ready:
		l.ready = nil
	case reply := <-l.w.snap:
		reply <- l.snapshot()
	}
	return false
}

func (w *Watcher) check(ctx context.Context, key string) Result {
	start := w.cfg.Clock.Now()
	cctx, cancel := context.WithTimeout(ctx, w.cfg.CheckTimeout)
	v, err := w.cfg.Check(cctx, key)
	cancel()
	end := w.cfg.Clock.Now()
	if err == nil && v == "" {
		err = errors.New("the backend reported an empty version")
	}
	if err != nil {
		v = ""
	}
	return Result{Key: key, Version: v, Err: err, At: end, Duration: end.Sub(start)}
}

func (l *loop) applyOps() {
	l.w.mu.Lock()
	ops := l.w.ops
	l.w.ops = nil
	l.w.mu.Unlock()
	now := l.w.cfg.Clock.Now()
	for _, o := range ops {
		e := l.entries[o.key]
		switch o.kind {
		case opAdd:
			if e != nil {
				e.removed = false
				continue
			}
			e = &entry{key: o.key, version: o.version, mult: 1, idx: -1}
			// Spread first checks over one interval so that a restart
			// with many keys does not burst the backend.
			e.due = l.at(now) + time.Duration(l.w.rng.Int64N(int64(l.w.cfg.Interval)))
			l.entries[o.key] = e
			heap.Push(&l.heap, e)
		case opRemove:
			if e == nil {
				continue
			}
			if e.inflight {
				e.removed = true
				continue
			}
			l.untrigger(e)
			heap.Remove(&l.heap, int(e.idx))
			delete(l.entries, o.key)
			delete(l.pending, o.key)
		case opTrigger:
			if e != nil {
				l.triggerEntry(e, now)
			}
		case opTriggerAll:
			for _, e := range l.entries {
				l.triggerEntry(e, now)
			}
		}
	}
}

func (l *loop) triggerEntry(e *entry, now time.Time) {
	e.mult = 1
	if !e.triggered {
		e.triggered = true
		l.triggered++
	}
	if e.inflight {
		e.again = true
		return
	}
	e.due = l.at(now)
	heap.Fix(&l.heap, int(e.idx))
}

func (l *loop) dispatch(now time.Time, jobs chan<- string) {
	for until := l.at(now) + l.slack; l.inflight < l.w.cfg.Concurrency && len(l.heap) > 0 && l.heap[0].due <= until; {
		e := heap.Pop(&l.heap).(*entry)
		e.inflight = true
		l.inflight++
		jobs <- e.key
	}
}

func (l *loop) done(r Result) {
	l.inflight--
	e := l.entries[r.Key]
	if e.removed {
		l.untrigger(e)
		delete(l.entries, r.Key)
		return
	}
	// A check asked for while this one was under way runs again (again):
	// only that one ends the trigger. A change this one found still goes
	// out as soon as every triggered check has ended.
	triggered := e.triggered
	if triggered && !e.again {
		l.untrigger(e)
	}
	e.inflight = false
	at := l.at(r.At)
	e.lastCheck, e.checked = at, true
	e.failing = r.Err != nil
	switch {
	case r.Err != nil:
		l.backoff(e)
	case e.version == "":
		e.version = r.Version
		l.backoff(e)
	case r.Version != e.version:
		r.Changed = true
		c, seen := l.pending[e.key]
		if !seen {
			c = Change{Key: e.key, Old: e.version}
		}
		c.New = r.Version
		l.pending[e.key] = c
		if l.settleAt.IsZero() {
			l.settleAt = r.At.Add(l.w.cfg.Settle)
		}
		l.early = l.early || triggered
		e.version = r.Version
		e.mult = 1
	default:
		l.backoff(e)
	}
	if e.again {
		e.again = false
		e.due = at
	} else {
		e.due = at + l.interval(e)
	}
	heap.Push(&l.heap, e)
	if l.w.cfg.Observe != nil {
		l.w.cfg.Observe(r)
	}
}

// untrigger ends e's triggered check.
func (l *loop) untrigger(e *entry) {
	if e.triggered {
		e.triggered = false
		l.triggered--
	}
}

func (l *loop) backoff(e *entry) {
	if int(e.mult)*2 <= l.w.cfg.MaxBackoff {
		e.mult *= 2
	} else {
		e.mult = uint8(min(l.w.cfg.MaxBackoff, 255))
	}
}

func (l *loop) interval(e *entry) time.Duration {
	base := float64(l.w.cfg.Interval) * float64(e.mult)
	j := l.w.cfg.Jitter * (2*l.w.rng.Float64() - 1)
	return time.Duration(base * (1 + j))
}

// flush moves the gathered changes to the ready batch once the settle
// window has passed, or once every triggered check has ended when one of
// them found a change, merging with a batch the reader has not taken yet.
func (l *loop) flush(now time.Time) {
	if l.settleAt.IsZero() || now.Before(l.settleAt) && !(l.early && l.triggered == 0) {
		return
	}
	for _, c := range l.ready {
		if p, ok := l.pending[c.Key]; ok {
			c.New = p.New
		}
		l.pending[c.Key] = c
	}
	l.ready = l.ready[:0]
	for _, c := range l.pending {
		if c.Old != c.New {
			l.ready = append(l.ready, c)
		}
	}
	slices.SortFunc(l.ready, func(a, b Change) int { return strings.Compare(a.Key, b.Key) })
	clear(l.pending)
	l.settleAt = time.Time{}
	l.early = false
}

// at is t as an offset from the loop's base.
func (l *loop) at(t time.Time) time.Duration { return t.Sub(l.base) }

// deadline is the next time the loop must wake by itself.
func (l *loop) deadline() time.Time {
	var d time.Time
	if len(l.heap) > 0 && l.inflight < l.w.cfg.Concurrency {
		d = l.base.Add(l.heap[0].due)
	}
	if !l.settleAt.IsZero() && (d.IsZero() || l.settleAt.Before(d)) {
		d = l.settleAt
	}
	return d
}

func (l *loop) snapshot() []KeyStatus {
	out := make([]KeyStatus, 0, len(l.entries))
	for _, e := range l.entries {
		if e.removed {
			continue
		}
		ks := KeyStatus{Key: e.key, Version: e.version, Interval: time.Duration(e.mult) * l.w.cfg.Interval, Failing: e.failing}
		if e.checked {
			ks.LastCheck = l.base.Add(e.lastCheck)
		}
		if !e.inflight {
			ks.NextCheck = l.base.Add(e.due)
		}
		out = append(out, ks)
	}
	slices.SortFunc(out, func(a, b KeyStatus) int { return strings.Compare(a.Key, b.Key) })
	return out
}
