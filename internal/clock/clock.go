// Package clock is the time source of code that waits: the system clock, and
// a fake one that moves only when a test says so.
package clock

import (
	"context"
	"sync"
	"time"
)

// Clock is a time source. Timers are set for an absolute
// deadline, so a fake clock advanced between "now" and "arm" cannot skew them.
type Clock interface {
	Now() time.Time
	TimerAt(deadline time.Time) Timer
}

// Timer fires once on C at its deadline unless stopped.
type Timer interface {
	C() <-chan time.Time
	Stop()
}

// RealClock is the system clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// TimerAt returns a timer firing at deadline.
func (RealClock) TimerAt(deadline time.Time) Timer {
	return realTimer{time.NewTimer(time.Until(deadline))}
}

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop()               { r.t.Stop() }

// FakeClock is a Clock that moves only when told to, for tests of code
// that waits.
type FakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*fakeTimer]struct{}
	armed  *sync.Cond
}

// NewFakeClock returns a clock standing at t.
func NewFakeClock(t time.Time) *FakeClock {
	c := &FakeClock{now: t, timers: map[*fakeTimer]struct{}{}}
	c.armed = sync.NewCond(&c.mu)
	return c
}

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// TimerAt returns a timer that fires when the clock reaches deadline.
func (c *FakeClock) TimerAt(deadline time.Time) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, at: deadline, ch: make(chan time.Time, 1)}
	if !deadline.After(c.now) {
		t.ch <- c.now
		return t
	}
	c.timers[t] = struct{}{}
	c.armed.Broadcast()
	return t
}

// Advance moves the clock by d and fires the timers that are due.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.timers {
		if !t.at.After(c.now) {
			delete(c.timers, t)
			t.ch <- c.now
		}
	}
}

// WaitArmed blocks until at least one timer is pending: the code under test
// has gone back to waiting on the clock.
func (c *FakeClock) WaitArmed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) == 0 {
		c.armed.Wait()
	}
}

// NextDeadline returns the earliest pending deadline (zero when none).
func (c *FakeClock) NextDeadline() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var min time.Time
	for t := range c.timers {
		if min.IsZero() || t.at.Before(min) {
			min = t.at
		}
	}
	return min
}

type fakeTimer struct {
	clock *FakeClock
	at    time.Time
	ch    chan time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	delete(t.clock.timers, t)
}

// Sleep waits d on c, or until ctx ends (then it returns ctx.Err()).
func Sleep(ctx context.Context, c Clock, d time.Duration) error {
	t := c.TimerAt(c.Now().Add(d))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}
