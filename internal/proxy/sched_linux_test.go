package proxy

import (
	"errors"
	"os"
	"runtime"
	"testing"
	"time"
)

// fakeThread stands for a loop's thread: the run delay the kernel would
// report, and the policy the loop set.
type fakeThread struct {
	delay, ran uint64
	statErr    error
	batch      bool
	sets       int
	refuse     bool
}

func newFakePolicy(th *fakeThread, start time.Time) *autoPolicy {
	return &autoPolicy{
		start: start, hold: firstHold,
		runDelay: func() (uint64, uint64, error) { return th.delay, th.ran, th.statErr },
		setPolicy: func(batch bool) error {
			if th.refuse {
				return errors.New("refused")
			}
			th.batch = batch
			th.sets++
			return nil
		},
	}
}

// windowOf feeds a policy one window of waits: events in waits waits, of
// which slept slept, the thread running ran times and waiting delay in all
// meanwhile; it returns the window's end.
func windowOf(a *autoPolicy, th *fakeThread, now time.Time, events, waits, slept int, ran uint64, delay time.Duration) time.Time {
	th.ran += ran
	th.delay += uint64(delay)
	end := now.Add(window)
	for i := range waits {
		at := now.Add(time.Duration(i) * window / time.Duration(waits))
		if i == waits-1 {
			at = end
		}
		n := events / waits
		if i == waits-1 {
			n = events - n*(waits-1)
		}
		a.observe(at, n, i < slept)
	}
	return end
}

// TestAutoPolicyFollowsLoad: a loop goes to SCHED_BATCH over a busy window
// (many events, for few of which it slept), stays there while busy, and
// goes back to the normal policy over a window with few events or with
// as many sleeps as events, or when it waits idle (rest).
func TestAutoPolicyFollowsLoad(t *testing.T) {
	th := &fakeThread{}
	now := time.Unix(1000, 0)
	a := newFakePolicy(th, now)
	step := func(what string, events, waits, slept int, want bool) {
		t.Helper()
		now = windowOf(a, th, now, events, waits, slept, uint64(waits), time.Duration(waits)*50*time.Microsecond)
		if th.batch != want || a.batch != want {
			t.Fatalf("after %s: batch %v (the loop thinks %v), want %v", what, th.batch, a.batch, want)
		}
	}
	step("a window of 100 events", 100, 50, 45, false)
	step("a window of 900 events, few sleeps", 900, 100, 10, false)
	step("a window of 3,000 events for 1,000 waits, all slept", 3000, 1000, 1000, false)
	step("a window of 3,000 events for 1,000 waits, 800 slept", 3000, 1000, 800, true)
	step("another busy window", 5000, 300, 30, true)
	step("a window between busy and idle", 800, 300, 100, true)
	step("a window of 3,000 events for 3,000 waits, 1,600 slept", 3000, 3000, 1600, false)
	step("a busy window again", 3000, 400, 10, true)
	step("a window of 400 events", 400, 100, 0, false)
	step("a busy window again", 3000, 400, 10, true)
	a.rest(now)
	if th.batch || a.batch {
		t.Fatalf("after rest: batch %v, want the normal policy", th.batch)
	}
	if th.sets != 6 {
		t.Errorf("the policy was set %d times, want 6 (only changes)", th.sets)
	}
}

// TestAutoPolicyHoldsNormalWhenWaitingToRun: a SCHED_BATCH thread that
// waited more than maxRunDelay a time it ran, on average over a window,
// goes back to the normal policy and stays there, however busy, for a
// hold that doubles each time up to maxHold and starts over after a
// batch period that ended without it.
func TestAutoPolicyHoldsNormalWhenWaitingToRun(t *testing.T) {
	th := &fakeThread{}
	now := time.Unix(1000, 0)
	a := newFakePolicy(th, now)
	busy := func(delay time.Duration) {
		now = windowOf(a, th, now, 3000, 100, 5, 100, 100*delay)
	}
	busy(0)
	if !th.batch {
		t.Fatal("a busy window left the normal policy")
	}
	busy(maxRunDelay) // on the bound: stays
	if !th.batch {
		t.Fatal("a run delay of maxRunDelay a time left SCHED_BATCH")
	}
	wantHeld := func(hold time.Duration) {
		t.Helper()
		busy(maxRunDelay + time.Microsecond)
		if th.batch {
			t.Fatalf("a run delay past maxRunDelay kept SCHED_BATCH")
		}
		left := a.until.Sub(now)
		if left != hold {
			t.Fatalf("held for %v, want %v", left, hold)
		}
		for {
			busy(0)
			if !now.Before(a.until) {
				break
			}
			if th.batch {
				t.Fatalf("SCHED_BATCH again %v before the hold's end", a.until.Sub(now))
			}
		}
		if !th.batch {
			t.Fatal("no SCHED_BATCH after the hold, busy")
		}
	}
	for _, hold := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		wantHeld(hold)
	}
	a.hold = maxHold / 2
	wantHeld(maxHold / 2)
	wantHeld(maxHold)
	wantHeld(maxHold)
	now = windowOf(a, th, now, 100, 100, 100, 100, 0) // idle: back to normal, hold starts over
	busy(0)
	wantHeld(firstHold)
}

// TestAutoPolicyRestChecksRunDelay: a SCHED_BATCH period that ends with
// the loop idle, before its window does, goes back to the normal policy;
// if the thread waited long to run meanwhile, the hold starts as after a
// window, else the hold starts over. Idle under the normal policy, nothing
// changes.
func TestAutoPolicyRestChecksRunDelay(t *testing.T) {
	th := &fakeThread{}
	now := time.Unix(1000, 0)
	a := newFakePolicy(th, now)
	now = windowOf(a, th, now, 3000, 100, 5, 100, 0)
	if !th.batch {
		t.Fatal("a busy window left the normal policy")
	}
	now = now.Add(window / 2)
	th.ran, th.delay = th.ran+10, th.delay+uint64(10*time.Millisecond)
	a.rest(now)
	if th.batch || !a.until.Equal(now.Add(firstHold)) || a.hold != 2*firstHold {
		t.Fatalf("idle after waiting 1 ms a run: batch %v, held until +%v, next hold %v; want the normal policy held for %v, next %v", th.batch, a.until.Sub(now), a.hold, firstHold, 2*firstHold)
	}
	now = windowOf(a, th, a.until, 3000, 100, 5, 100, 0)
	if !th.batch {
		t.Fatal("a busy window after the hold left the normal policy")
	}
	now = now.Add(window / 2)
	th.ran, th.delay = th.ran+10, th.delay+uint64(10*time.Microsecond)
	a.rest(now)
	if th.batch || a.hold != firstHold {
		t.Fatalf("idle after waiting 10 µs a run: batch %v, next hold %v; want the normal policy, next hold %v", th.batch, a.hold, firstHold)
	}
	sets := th.sets
	a.rest(now.Add(time.Second))
	if th.sets != sets || th.batch {
		t.Fatalf("idle under the normal policy set the policy again")
	}
}

// TestAutoPolicyStaysNormalWithoutRunDelay: a thread whose run delay
// cannot be read, or that may not change its policy, keeps the normal
// policy however busy.
func TestAutoPolicyStaysNormalWithoutRunDelay(t *testing.T) {
	for _, th := range []*fakeThread{{statErr: os.ErrNotExist}, {refuse: true}} {
		now := time.Unix(1000, 0)
		a := newFakePolicy(th, now)
		for range 5 {
			now = windowOf(a, th, now, 3000, 100, 5, 100, 0)
		}
		if th.batch || a.batch {
			t.Errorf("%+v: SCHED_BATCH", th)
		}
	}
}

// TestReadSchedstat reads this thread's run delay from the kernel: it ran
// at least once, and reading again after waiting to run does not go back.
func TestReadSchedstat(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open("/proc/thread-self/schedstat")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	delay, ran, err := readSchedstat(f)
	if err != nil || ran == 0 {
		t.Fatalf("readSchedstat = %d, %d, %v; want a thread that ran", delay, ran, err)
	}
	time.Sleep(time.Millisecond)
	delay2, ran2, err := readSchedstat(f)
	if err != nil || ran2 <= ran || delay2 < delay {
		t.Fatalf("after a sleep: %d, %d, %v; want more runs than %d and no less delay than %d", delay2, ran2, err, ran, delay)
	}
}
