// Package backoff is the one retry wait of DSO: exponential waits with
// jitter (github.com/cenkalti/backoff computes them), slept on an injectable
// clock and cut short by the context. Every loop that retries (the engine
// connection, deliveries, a failed daemon component, webhooks) waits with it.
package backoff

import (
	"context"
	"time"

	cb "github.com/cenkalti/backoff/v5"

	"github.com/dso-project/dso/internal/clock"
)

// Backoff hands out growing waits: First, then doubled up to Max, each
// jittered by ±50% so that clients that failed together spread out.
type Backoff struct {
	clk clock.Clock
	exp cb.ExponentialBackOff
}

// New returns a backoff starting at first and capped at max, waiting on clk
// (the system clock when nil).
func New(clk clock.Clock, first, max time.Duration) *Backoff {
	if clk == nil {
		clk = clock.RealClock{}
	}
	b := &Backoff{clk: clk, exp: cb.ExponentialBackOff{InitialInterval: first, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: max}}
	b.exp.Reset()
	return b
}

// Next returns the next wait and grows the one after it.
func (b *Backoff) Next() time.Duration { return b.exp.NextBackOff() }

// Reset starts again from the first wait (after a success).
func (b *Backoff) Reset() { b.exp.Reset() }

// Wait sleeps the next wait, or until ctx ends (then it returns ctx.Err()).
func (b *Backoff) Wait(ctx context.Context) error {
	return clock.Sleep(ctx, b.clk, b.Next())
}
