package agent

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"time"

	"github.com/dso-project/dso/internal/backoff"
	"github.com/dso-project/dso/internal/clock"
)

// component is one long-running part of the daemon.
type component struct {
	name string
	// run serves until ctx ends (then returns nil); an error before that
	// means the part failed.
	run func(ctx context.Context) error
}

// healthyAfter is how long a restarted component must run before it is no
// longer reported as degraded.
const healthyAfter = 10 * time.Second

// supervise starts comps in order, each in its own goroutine, and returns
// when ctx has ended and every component has stopped: they are stopped in
// reverse order, each once the one started after it has returned. A
// component that fails is reported degraded on d and started again with
// backoff, while the others keep running.
func supervise(ctx context.Context, clk clock.Clock, log *slog.Logger, d degradable, comps []component) {
	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	rs := make([]running, 0, len(comps))
	for _, c := range comps {
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		rs = append(rs, running{cancel, done})
		go func() {
			defer close(done)
			keep(cctx, clk, log, d, c)
		}()
	}
	<-ctx.Done()
	for i := len(rs) - 1; i >= 0; i-- {
		rs[i].cancel()
		<-rs[i].done
	}
}

// degradable records which parts of the daemon fail.
type degradable interface {
	degrade(part string, err error) // err nil: the part works again
}

// keep runs c until ctx ends, restarting it with backoff when it fails.
func keep(ctx context.Context, clk clock.Clock, log *slog.Logger, d degradable, c component) {
	b := backoff.New(clk, time.Second, time.Minute)
	for {
		started := clk.Now()
		errc := make(chan error, 1)
		go func() { errc <- c.run(ctx) }()
		var err error
		healthy := clk.TimerAt(started.Add(healthyAfter))
	wait:
		for {
			select {
			case err = <-errc:
				break wait
			case <-healthy.C():
				d.degrade(c.name, nil)
				b.Reset()
			}
		}
		healthy.Stop()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errStopped
		}
		d.degrade(c.name, err)
		wait := b.Next()
		log.Error("agent component failed; starting it again", "component", c.name, "error", err, "in", wait.Round(time.Millisecond))
		if clock.Sleep(ctx, clk, wait) != nil {
			return
		}
	}
}

// errStopped is a component that returned while the daemon ran.
var errStopped = errors.New("stopped unexpectedly")

// parts are the failing parts of the daemon, for Health.
type parts map[string]string

func (p parts) problems() []string {
	out := make([]string, 0, len(p))
	for name, err := range p {
		out = append(out, name+": "+err)
	}
	sort.Strings(out)
	return out
}

// degrade records that part fails (err not nil) or works again.
func (a *Agent) degrade(part string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		delete(a.failing, part)
		return
	}
	a.failing[part] = err.Error()
}
