package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/swarm/driver"
)

// fakeEngine answers docker info: a Swarm manager or not.
type fakeEngine struct{ manager atomic.Bool }

func (e *fakeEngine) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	return client.SystemInfoResult{Info: system.Info{Swarm: swarm.Info{ControlAvailable: e.manager.Load()}}}, nil
}

func noValues(context.Context, secretref.Ref) ([]byte, error) { return nil, errors.New("none") }

func exists(path string) bool { _, err := os.Lstat(path); return err == nil }

// TestSwarmDriverWaitsForManager: on an engine that is not a Swarm manager
// the driver makes no socket; once the engine becomes one, the next check
// serves it; when the daemon stops, the socket goes.
func TestSwarmDriverWaitsForManager(t *testing.T) {
	engine := &fakeEngine{}
	clk := clock.NewFakeClock(time.Unix(1e9, 0))
	path := filepath.Join(t.TempDir(), "dso.sock")
	c := swarmDriver(engine, clk, driver.New(noValues, nil, nil), path)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- c.run(ctx) }()

	clk.WaitArmed() // checked once, waits for the next check
	if exists(path) {
		t.Fatal("the driver serves on an engine that is not a Swarm manager")
	}
	engine.manager.Store(true)
	clk.Advance(managerCheckInterval)
	deadline := time.Now().Add(5 * time.Second)
	for !exists(path) {
		if time.Now().After(deadline) {
			t.Fatal("no driver socket once the engine is a Swarm manager")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("the component returned %v after the daemon stopped, want nil", err)
	}
	if exists(path) {
		t.Error("the socket is still there after the daemon stopped")
	}
}

// TestSwarmDriverDegrades: a socket that cannot be made fails the
// component, which the daemon reports in its health and starts again,
// while it keeps running.
func TestSwarmDriverDegrades(t *testing.T) {
	engine := &fakeEngine{}
	engine.manager.Store(true)
	dir := t.TempDir()
	path := filepath.Join(dir, "dso.sock")
	if err := os.WriteFile(path, nil, 0o600); err != nil { // in the way
		t.Fatal(err)
	}
	parts := &fakeParts{errs: map[string]error{}, seen: make(chan string, 10)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		supervise(ctx, clock.RealClock{}, slog.New(slog.DiscardHandler), parts,
			[]component{swarmDriver(engine, clock.RealClock{}, driver.New(noValues, nil, nil), path)})
		close(done)
	}()
	select {
	case part := <-parts.seen:
		parts.mu.Lock()
		err := parts.errs[part]
		parts.mu.Unlock()
		if part != "Swarm secret driver" || err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("degraded part %q: %v; want the Swarm secret driver naming %s and why", part, err, path)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not report the driver that cannot make its socket")
	}
	cancel()
	<-done
}
