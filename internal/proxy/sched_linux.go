package proxy

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Under SchedulingAuto, the default, each event loop chooses its thread's
// policy window by window, from what it sees: SCHED_BATCH while it is
// busy, the normal policy otherwise (and whenever it waits idle, see
// rest), and the normal policy for a while when its thread waited long to
// run under SCHED_BATCH.
//
// A busy loop (many events in a window, most of them found ready after it
// yielded, rather than slept for) is woken by writers, the client and the
// backend, that have more to write: under the normal policy the loop
// preempts the writer for each message, and both pay a switch and a
// wake-up more for it. Under SCHED_BATCH it never preempts the task that
// woke it: it runs when that one sleeps, or at the scheduler's tick, and
// takes what was written in one batch. In five runs of BenchmarkProxy,
// 64 connections of small requests made 1.03-1.18x HAProxy's rate with
// it, 0.96-1.11x with the normal policy alone. A loop that is not busy
// keeps the normal policy, so that a lone message moves at once. Beside
// processes that never sleep, a SCHED_BATCH thread waits for the tick to
// run: the loop reads the time its thread waited to run
// (/proc/thread-self/schedstat), and if that grew past maxRunDelay on
// average, keeps the normal policy for a hold that doubles each time.

const (
	// window is how often a loop chooses.
	window = 100 * time.Millisecond
	// A loop is busy over a window of at least busyEvents events, for
	// fewer than 3 in 10 of which it slept; idle under idleEvents, or when
	// it slept for one of 2.
	busyEvents = 1000
	idleEvents = 500
	// maxRunDelay is the most a SCHED_BATCH thread may wait to run, on
	// average each time it ran in a window; past it the loop holds the
	// normal policy for firstHold, doubled each time up to maxHold.
	maxRunDelay = 500 * time.Microsecond
	firstHold   = time.Second
	maxHold     = time.Minute
)

// autoPolicy is a loop's choice of policy. Only the loop's goroutine uses
// it, locked to its thread.
type autoPolicy struct {
	batch         bool
	start         time.Time // the window's
	events, slept int
	delay, ran    uint64 // the thread's run delay (ns) and times it ran, at the window's start
	hold          time.Duration
	until         time.Time // no SCHED_BATCH before

	// runDelay reads the thread's run delay and times it ran; setPolicy
	// moves the thread to SCHED_BATCH or back (tests replace both).
	runDelay  func() (delay, ran uint64, err error)
	setPolicy func(batch bool) error
}

// newAutoPolicy locks the calling goroutine to its thread, for good. A
// thread whose run delay cannot be read keeps the normal policy.
func newAutoPolicy() *autoPolicy {
	runtime.LockOSThread()
	a := &autoPolicy{start: time.Now(), hold: firstHold, setPolicy: setPolicy}
	f, err := os.Open("/proc/thread-self/schedstat")
	a.runDelay = func() (uint64, uint64, error) {
		if err != nil {
			return 0, 0, err
		}
		return readSchedstat(f)
	}
	a.delay, a.ran, _ = a.runDelay()
	return a
}

// observe counts a wait that returned n events at now, slept telling
// whether the thread slept for them, and chooses the policy when a window
// ends.
func (a *autoPolicy) observe(now time.Time, n int, slept bool) {
	a.events += n
	if slept {
		a.slept++
	}
	if now.Sub(a.start) >= window {
		a.choose(now, false)
	}
}

// rest moves the thread back to the normal policy when the loop, idle,
// waits for its next event without its processor (at now): that event is
// then moved at once, even beside processes that never sleep. The time
// the thread waited to run since the window began counts as a window's.
func (a *autoPolicy) rest(now time.Time) {
	if a.batch {
		a.choose(now, true)
	}
}

// choose ends a window at now, idle or not, and chooses the policy. The
// hold starts over when a SCHED_BATCH period ends for idleness, the
// thread's run delay within bounds.
func (a *autoPolicy) choose(now time.Time, idle bool) {
	delay, ran, err := a.runDelay()
	busy := a.events >= busyEvents && a.slept*10 < a.events*3
	idle = idle || a.events < idleEvents || a.slept*2 > a.events
	switch {
	case err != nil:
		a.set(false)
	case a.batch && ran > a.ran && time.Duration((delay-a.delay)/(ran-a.ran)) > maxRunDelay:
		a.set(false)
		a.until = now.Add(a.hold)
		a.hold = min(2*a.hold, maxHold)
	case a.batch && idle:
		a.set(false)
		a.hold = firstHold
	case !a.batch && busy && !now.Before(a.until):
		a.set(true)
	}
	a.start, a.events, a.slept, a.delay, a.ran = now, 0, 0, delay, ran
}

// set moves the thread to the policy, if it is not there; a refusal leaves
// the choice as it was.
func (a *autoPolicy) set(batch bool) {
	if batch != a.batch && a.setPolicy(batch) == nil {
		a.batch = batch
	}
}

// readSchedstat reads a thread's schedstat file: the time it ran, the
// time it waited to run (both in nanoseconds) and how many times it ran.
func readSchedstat(f *os.File) (delay, ran uint64, err error) {
	var buf [128]byte
	n, err := f.ReadAt(buf[:], 0)
	if n == 0 {
		return 0, 0, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	fields := strings.Fields(string(buf[:n]))
	if len(fields) != 3 {
		return 0, 0, fmt.Errorf("%s: %q is not three numbers", f.Name(), buf[:n])
	}
	if delay, err = strconv.ParseUint(fields[1], 10, 64); err == nil {
		ran, err = strconv.ParseUint(fields[2], 10, 64)
	}
	return delay, ran, err
}
