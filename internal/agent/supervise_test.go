package agent

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/clock"
)

type fakeParts struct {
	mu   sync.Mutex
	errs map[string]error
	seen chan string
}

func (f *fakeParts) degrade(part string, err error) {
	f.mu.Lock()
	f.errs[part] = err
	f.mu.Unlock()
	if err != nil {
		f.seen <- part
	}
}

// TestSuperviseStopsInReverse starts three components and checks they stop
// last-started first, each after the later one has returned.
func TestSuperviseStopsInReverse(t *testing.T) {
	var mu sync.Mutex
	var started, stopped []string
	comp := func(name string) component {
		return component{name: name, run: func(ctx context.Context) error {
			mu.Lock()
			started = append(started, name)
			mu.Unlock()
			<-ctx.Done()
			mu.Lock()
			stopped = append(stopped, name)
			mu.Unlock()
			return nil
		}}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		supervise(ctx, clock.RealClock{}, slog.New(slog.DiscardHandler), &fakeParts{errs: map[string]error{}, seen: make(chan string, 10)},
			[]component{comp("a"), comp("b"), comp("c")})
		close(done)
	}()
	for {
		mu.Lock()
		n := len(started)
		mu.Unlock()
		if n == 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if !slices.Equal(stopped, []string{"c", "b", "a"}) {
		t.Fatalf("stopped in order %v, want c, b, a", stopped)
	}
}

// TestSuperviseRestartsAFailedPart has one component fail twice: it is
// reported degraded, started again after the backoff, and reported healthy
// once it has run for healthyAfter; the other component is never stopped.
func TestSuperviseRestartsAFailedPart(t *testing.T) {
	clk := clock.NewFakeClock(time.Unix(1e9, 0))
	parts := &fakeParts{errs: map[string]error{}, seen: make(chan string, 10)}
	runs := make(chan int, 10)
	n := 0
	flaky := component{name: "watch", run: func(ctx context.Context) error {
		n++
		runs <- n
		if n <= 2 {
			return errors.New("stat: permission denied")
		}
		<-ctx.Done()
		return nil
	}}
	steadyStops := 0
	steady := component{name: "api", run: func(ctx context.Context) error {
		<-ctx.Done()
		steadyStops++
		return nil
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		supervise(ctx, clk, slog.New(slog.DiscardHandler), parts, []component{steady, flaky})
		close(done)
	}()
	// nextRun moves the fake clock a second at a time until the flaky part
	// runs again (past its backoff: 1 s first, jittered, then 2 s).
	nextRun := func() int {
		for {
			select {
			case got := <-runs:
				return got
			case <-time.After(time.Millisecond):
				clk.Advance(time.Second)
			}
		}
	}
	for want := 1; want <= 3; want++ {
		if got := nextRun(); got != want {
			t.Fatalf("run %d, want %d", got, want)
		}
		if want <= 2 {
			if p := <-parts.seen; p != "watch" {
				t.Fatalf("degraded %q, want watch", p)
			}
		}
	}
	parts.mu.Lock()
	if parts.errs["watch"] == nil {
		t.Errorf("the failed part is not reported degraded before it has run %s", healthyAfter)
	}
	parts.mu.Unlock()
	for {
		clk.Advance(time.Second)
		parts.mu.Lock()
		ok := parts.errs["watch"] == nil
		parts.mu.Unlock()
		if ok {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if steadyStops != 1 {
		t.Errorf("the healthy component stopped %d times, want once (at the end)", steadyStops)
	}
}
