package watch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/clock"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// liveness bounds a wait for something the code under test does at once
// (nothing here waits on the real clock): generous, so that a loaded
// machine never fails a test, yet a hang still ends.
const liveness = time.Minute

// backend is an in-memory set of versions with a call log.
type backend struct {
	mu       sync.Mutex
	versions map[string]string
	fail     bool
	calls    []time.Time
	clock    clock.Clock
}

func (b *backend) set(key, v string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.versions[key] = v
}

func (b *backend) check(ctx context.Context, key string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, b.clock.Now())
	if b.fail {
		return "", errors.New("backend unreachable")
	}
	return b.versions[key], nil
}

type harness struct {
	t       *testing.T
	clock   *clock.FakeClock
	be      *backend
	w       *Watcher
	results chan Result
	cancel  context.CancelFunc
	done    chan error
}

func start(t *testing.T, known map[string]string, current map[string]string) *harness {
	t.Helper()
	clock := clock.NewFakeClock(t0)
	be := &backend{versions: current, clock: clock}
	h := &harness{t: t, clock: clock, be: be, results: make(chan Result, 100), done: make(chan error, 1)}
	w, err := New(Config{Check: be.check, Interval: 30 * time.Second, Clock: clock, Seed: 1, Observe: func(r Result) { h.results <- r }})
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	for k, v := range known {
		w.Add(k, v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- w.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run returned %v after cancel, want nil", err)
		}
		h.done <- nil
	case <-time.After(liveness):
		h.t.Fatal("Run did not return after cancel")
	}
}

func (h *harness) result() Result {
	h.t.Helper()
	select {
	case r := <-h.results:
		return r
	case <-time.After(liveness):
		h.t.Fatal("no check result")
		return Result{}
	}
}

// step advances the clock to the next deadline and returns the check that ran.
func (h *harness) step() Result {
	h.t.Helper()
	h.clock.WaitArmed()
	h.clock.Advance(h.clock.NextDeadline().Sub(h.clock.Now()))
	return h.result()
}

func (h *harness) batch() []Change {
	h.t.Helper()
	select {
	case b := <-h.w.Changes():
		return b
	case <-time.After(liveness):
		h.t.Fatal("no batch of changes")
		return nil
	}
}

// TestTriggeredChangesAreOneBatchAtOnce: the changes a Trigger's checks
// find are one batch, delivered when the last of those checks ends, before
// the settle window (the clock does not move).
func TestTriggeredChangesAreOneBatchAtOnce(t *testing.T) {
	h := start(t, map[string]string{"a": "1", "b": "1", "c": "1", "d": "1"}, map[string]string{"a": "1", "b": "1", "c": "1", "d": "1"})
	h.be.set("a", "2")
	h.be.set("b", "2")
	h.be.set("c", "2")
	h.w.Trigger()
	got := h.batch()
	want := []Change{{"a", "1", "2"}, {"b", "1", "2"}, {"c", "1", "2"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("batch = %v, want %v", got, want)
	}
	if n := len(h.be.calls); n != 4 {
		t.Fatalf("%d checks before the batch, want the 4 triggered", n)
	}
}

// TestTriggerDuringACheckStillSkipsTheSettle: a second Trigger while the
// first one's check is under way (the local vault file watched twice, a
// webhook beside the file) has the key checked again, and the change the
// first check found goes out once that second check ends, still before the
// settle window (the clock does not move). It waited the whole window.
func TestTriggerDuringACheckStillSkipsTheSettle(t *testing.T) {
	fake := clock.NewFakeClock(t0)
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	check := func(ctx context.Context, key string) (string, error) {
		if calls.Add(1) == 1 {
			entered <- struct{}{}
			<-release
		}
		return "2", nil
	}
	w, err := New(Config{Check: check, Interval: 30 * time.Second, Clock: fake, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.Add("a", "1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	w.Trigger()
	<-entered
	w.Trigger() // while the check is under way
	for {
		w.mu.Lock()
		taken := len(w.ops) == 0
		w.mu.Unlock()
		if taken {
			break
		}
		runtime.Gosched()
	}
	if _, err := w.Snapshot(ctx); err != nil { // the loop is past applying it
		t.Fatal(err)
	}
	close(release)
	select {
	case got := <-w.Changes():
		if fmt.Sprint(got) != "[{a 1 2}]" {
			t.Fatalf("batch = %v, want [{a 1 2}]", got)
		}
	case <-time.After(liveness):
		t.Fatal("no batch before the settle window")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d checks before the batch, want 2 (the second Trigger's too)", n)
	}
}

// TestPolledChangesSettle: changes that polls find are gathered for the
// settle window, so that changes found close together are one batch.
func TestPolledChangesSettle(t *testing.T) {
	clk := clock.NewFakeClock(t0)
	be := &backend{versions: map[string]string{"a": "2", "b": "2"}, clock: clk}
	results := make(chan Result, 10)
	// Both first checks fall within 100ms: inside one settle window.
	w, err := New(Config{Check: be.check, Interval: 100 * time.Millisecond, Clock: clk, Seed: 1, Observe: func(r Result) { results <- r }})
	if err != nil {
		t.Fatal(err)
	}
	w.Add("a", "1")
	w.Add("b", "1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	for seen := map[string]bool{}; len(seen) < 2; {
		clk.WaitArmed()
		clk.Advance(clk.NextDeadline().Sub(clk.Now()))
		select {
		case r := <-results:
			seen[r.Key] = true
		case <-time.After(liveness):
			t.Fatal("no check result")
		}
		select {
		case b := <-w.Changes():
			t.Fatalf("batch delivered before the settle window: %v", b)
		default:
		}
	}
	clk.Advance(200 * time.Millisecond)
	select {
	case got := <-w.Changes():
		if want := []Change{{"a", "1", "2"}, {"b", "1", "2"}}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("batch = %v, want %v", got, want)
		}
	case <-time.After(liveness):
		t.Fatal("no batch after the settle window")
	}
}

func TestBackoffWhileUnchangedAndResetOnChange(t *testing.T) {
	h := start(t, map[string]string{"k": "1"}, map[string]string{"k": "1"})
	h.w.Trigger("k")
	prev := h.result().At
	gap := func(r Result) time.Duration { d := r.At.Sub(prev); prev = r.At; return d }
	within := func(d, base time.Duration) bool { return d >= base*9/10 && d <= base*11/10 }

	for i, base := range []time.Duration{60 * time.Second, 120 * time.Second, 120 * time.Second} {
		r := h.step()
		if d := gap(r); !within(d, base) || r.Changed {
			t.Fatalf("unchanged check %d came after %v (want %v ±10%%), changed=%v", i, d, base, r.Changed)
		}
	}
	h.be.set("k", "2")
	if r := h.step(); !r.Changed || !within(gap(r), 120*time.Second) {
		t.Fatal("change not seen at the next check")
	}
	h.clock.Advance(200 * time.Millisecond) // the settle window
	if b := h.batch(); len(b) != 1 {
		t.Fatalf("batch = %v", b)
	}
	if r := h.step(); !within(gap(r), 30*time.Second) {
		t.Fatalf("interval not reset to 30s after a change")
	}
}

func TestKnownVersionDifferingAtFirstCheckIsAChange(t *testing.T) {
	h := start(t, map[string]string{"k": "old", "fresh": ""}, map[string]string{"k": "new", "fresh": "x"})
	h.w.Trigger()
	h.result()
	h.result()
	h.clock.Advance(time.Second)
	got := h.batch()
	if len(got) != 1 || got[0] != (Change{"k", "old", "new"}) {
		t.Fatalf("batch = %v, want only k old->new (a key with no known version only sets its baseline)", got)
	}
}

func TestUnchangedRestartRotatesNothing(t *testing.T) {
	h := start(t, map[string]string{"a": "1", "b": "7"}, map[string]string{"a": "1", "b": "7"})
	for range 6 {
		if r := h.step(); r.Changed {
			t.Fatalf("check %v reported a change", r)
		}
	}
	select {
	case b := <-h.w.Changes():
		t.Fatalf("got a batch with nothing changed: %v", b)
	default:
	}
}

func TestProviderOutageChangesNothing(t *testing.T) {
	h := start(t, map[string]string{"k": "1"}, map[string]string{"k": "1"})
	h.be.mu.Lock()
	h.be.fail = true
	h.be.mu.Unlock()
	h.w.Trigger()
	if r := h.result(); r.Err == nil || r.Changed {
		t.Fatalf("failed check: %+v", r)
	}
	snap, err := h.w.Snapshot(context.Background())
	if err != nil || len(snap) != 1 || !snap[0].Failing || snap[0].Version != "1" {
		t.Fatalf("snapshot during outage: %+v %v", snap, err)
	}
	h.be.mu.Lock()
	h.be.fail = false
	h.be.mu.Unlock()
	if r := h.step(); r.Err != nil || r.Changed {
		t.Fatalf("check after recovery: %+v", r)
	}
	select {
	case b := <-h.w.Changes():
		t.Fatalf("an outage produced a batch: %v", b)
	default:
	}
}

func TestSlowReaderGetsMergedBatch(t *testing.T) {
	h := start(t, map[string]string{"a": "1", "b": "1"}, map[string]string{"a": "1", "b": "1"})
	h.be.set("a", "2")
	h.w.Trigger("a")
	h.result()
	h.clock.Advance(time.Second) // a's batch is ready; nobody reads it yet
	h.be.set("b", "2")
	h.be.set("a", "3")
	h.w.Trigger()
	// Wait for the checks that see both changes: a check of b due by the
	// first Advance (first checks are spread over the interval) may come
	// in between.
	for seen := map[string]bool{}; !seen["a3"] || !seen["b2"]; {
		r := h.result()
		seen[r.Key+r.Version] = true
	}
	h.clock.Advance(time.Second)
	h.clock.WaitArmed()
	got := h.batch()
	want := []Change{{"a", "1", "3"}, {"b", "1", "2"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("batch = %v, want %v", got, want)
	}
}

// TestKeysDueTogetherShareAWakeUp: 600 keys whose first checks are spread
// over one 60s interval are all checked, never late and at most the slack
// (1/60 of the interval) early, in far fewer wake-ups of the loop than
// keys: one wake-up takes every key due within the slack.
func TestKeysDueTogetherShareAWakeUp(t *testing.T) {
	const n, interval = 600, 60 * time.Second
	clk := clock.NewFakeClock(t0)
	checked := make(chan time.Time, n)
	w, err := New(Config{Interval: interval, Clock: clk, Seed: 1,
		Check:   func(context.Context, string) (string, error) { return "1", nil },
		Observe: func(r Result) { checked <- r.At }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		w.Add(fmt.Sprintf("k%03d", i), "1")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	snap, err := w.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	due := map[string]time.Time{} // of the keys not checked yet
	for _, k := range snap {
		if k.LastCheck.IsZero() {
			due[k.Key] = k.NextCheck
		}
	}
	wakeUps := 0
	for seen := 0; seen < n; {
		clk.WaitArmed()
		clk.Advance(clk.NextDeadline().Sub(clk.Now()))
		wakeUps++
		// The checks of this wake-up: until the loop arms its next timer.
		for {
			select {
			case <-checked:
				seen++
				continue
			case <-time.After(20 * time.Millisecond):
			}
			break
		}
	}
	if wakeUps > 2*60 {
		t.Errorf("%d keys took %d wake-ups of the loop; want at most %d (one per slack of %v)", n, wakeUps, 2*60, interval/60)
	}
	snap, _ = w.Snapshot(ctx)
	for _, k := range snap {
		if due[k.Key].IsZero() {
			continue // in flight or checked at the first snapshot: due at once
		}
		if early := due[k.Key].Sub(k.LastCheck); early > interval/60 || early < -time.Second {
			t.Errorf("%s: due %v, checked %v", k.Key, due[k.Key], k.LastCheck)
		}
	}
	t.Logf("%d keys, %d wake-ups", n, wakeUps)
}

func TestRemoveStopsChecks(t *testing.T) {
	h := start(t, map[string]string{"a": "1", "b": "1"}, map[string]string{"a": "1", "b": "1"})
	h.w.Remove("a")
	h.w.Trigger("a", "nope")
	h.w.Trigger()
	if r := h.result(); r.Key != "b" {
		t.Fatalf("checked %q after it was removed", r.Key)
	}
	snap, _ := h.w.Snapshot(context.Background())
	if len(snap) != 1 || snap[0].Key != "b" {
		t.Fatalf("snapshot = %+v", snap)
	}
}

func TestCancelEndsBlockedChecks(t *testing.T) {
	started := make(chan struct{})
	var ctxErr error
	w, _ := New(Config{Interval: time.Millisecond, Check: func(ctx context.Context, key string) (string, error) {
		close(started)
		<-ctx.Done()
		ctxErr = ctx.Err()
		return "", ctx.Err()
	}})
	w.Add("k", "1")
	w.Trigger()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after cancel, want nil", err)
	}
	if ctxErr == nil {
		t.Fatal("Run returned before its worker finished")
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("a watcher without a check function was accepted")
	}
	if _, err := New(Config{Check: func(context.Context, string) (string, error) { return "", nil }, Jitter: 1.5}); err == nil {
		t.Fatal("jitter 1.5 was accepted")
	}
}

// vaultFile writes a file to watch in a new directory, and returns a fake
// clock and a channel for the watch's reports.
func vaultFile(t *testing.T) (dir, path string, fake *clock.FakeClock, changed chan struct{}) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "vault.enc")
	if err := os.WriteFile(path, []byte("v1"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, path, clock.NewFakeClock(t0), make(chan struct{}, 10)
}

// TestWatchFileSeesAtomicReplaceWithinASecond: without notifications,
// WatchFile looks at the file every DefaultFileInterval (well under a
// second) on its clock, and a look after an atomic replace (same size: only
// the inode tells) or a removal reports the change; no look, no report.
func TestWatchFileSeesAtomicReplaceWithinASecond(t *testing.T) {
	if DefaultFileInterval >= time.Second {
		t.Fatalf("DefaultFileInterval = %v: a change would not be seen within a second", DefaultFileInterval)
	}
	dir, path, fake, changed := vaultFile(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- watchFile(ctx, fake, path, 0, false, func() { changed <- struct{}{} }) }()

	// look advances the clock to WatchFile's next look, which must be at
	// most DefaultFileInterval away, and reports whether it saw a change.
	look := func() bool {
		t.Helper()
		fake.WaitArmed()
		if d := fake.NextDeadline().Sub(fake.Now()); d > DefaultFileInterval {
			t.Fatalf("the next look is %v away, want at most %v", d, DefaultFileInterval)
		}
		fake.Advance(fake.NextDeadline().Sub(fake.Now()))
		fake.WaitArmed() // the look is done: WatchFile waits for the next one
		select {
		case <-changed:
			return true
		default:
			return false
		}
	}
	if look() {
		t.Fatal("a change reported while the file did not change")
	}
	tmp := filepath.Join(dir, "vault.enc.tmp")
	if err := os.WriteFile(tmp, []byte("v2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if !look() {
		t.Fatal("an atomic replace was not seen at the next look")
	}
	if look() {
		t.Fatal("one replace reported twice")
	}
	os.Remove(path)
	if !look() {
		t.Fatal("a removal was not seen at the next look")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WatchFile = %v after cancel", err)
		}
	case <-time.After(liveness):
		t.Fatal("WatchFile did not return after cancel")
	}
}

// TestWatchFileIsToldOfChanges: WatchFile sees an atomic replace and a
// removal when the kernel tells it, without waiting for a look (its clock
// never moves), and reports each once.
func TestWatchFileIsToldOfChanges(t *testing.T) {
	dir, path, fake, changed := vaultFile(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go WatchFile(ctx, fake, path, 0, func() { changed <- struct{}{} })
	fake.WaitArmed() // watching

	seen := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(liveness):
			t.Fatalf("%s was not reported while the clock stood still", what)
		}
	}
	// Another file of the directory changes nothing.
	if err := os.WriteFile(filepath.Join(dir, "other"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "vault.enc.tmp")
	if err := os.WriteFile(tmp, []byte("v2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	seen("an atomic replace")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	seen("a removal")
	if len(changed) != 0 {
		t.Fatalf("%d more changes reported than made", len(changed))
	}
}
