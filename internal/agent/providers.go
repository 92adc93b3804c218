package agent

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/resolve"
)

// ProviderCache builds provider sets per dso.yaml path, once, and again when
// the file changes. The path "" stands for fallback (the agent's own
// configuration, or the local vault at its default place when nil). While
// Run runs, each provider with background work (Vault's token renewal and
// re-login) does it for as long as its set is in use.
type ProviderCache struct {
	Registry *resolve.Registry
	Fallback *config.Config
	// Failed, when set, hears of a provider whose background work stopped
	// with an error (err nil: it runs again).
	Failed func(part string, err error)

	mu   sync.Mutex
	sets map[string]*cached
	ctx  context.Context // Run's; nil before Run and after it
	wg   sync.WaitGroup
}

type cached struct {
	set    *resolve.Set
	mtime  time.Time
	cancel context.CancelFunc // ends its providers' background work
}

// runner is a provider with background work for its whole life.
type runner interface {
	Run(ctx context.Context) error
}

// Get returns the set for the dso.yaml at path.
func (c *ProviderCache) Get(path string) (*resolve.Set, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sets == nil {
		c.sets = map[string]*cached{}
	}
	var mtime time.Time
	if path != "" {
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		mtime = st.ModTime()
	}
	if e, ok := c.sets[path]; ok && e.mtime.Equal(mtime) {
		return e.set, nil
	}
	cfg := c.Fallback
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return nil, config.Positions(err)
		}
	}
	set, err := c.Registry.Build(cfg)
	if err != nil {
		return nil, err
	}
	if old, ok := c.sets[path]; ok {
		c.release(old)
	}
	e := &cached{set: set, mtime: mtime}
	c.sets[path] = e
	if c.ctx != nil {
		c.start(e)
	}
	return set, nil
}

// start runs the background work of e's providers. The caller holds mu.
func (c *ProviderCache) start(e *cached) {
	ctx, cancel := context.WithCancel(c.ctx)
	e.cancel = cancel
	for _, name := range e.set.Names() {
		p, _ := e.set.Named(name)
		r, ok := p.(runner)
		if !ok {
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			part := fmt.Sprintf("provider %q", name)
			err := r.Run(ctx)
			if err != nil && ctx.Err() == nil && c.Failed != nil {
				c.Failed(part+" background work (token renewal)", err)
			}
		}()
	}
}

// release stops e's background work and closes its providers. The caller
// holds mu.
func (c *ProviderCache) release(e *cached) {
	if e.cancel != nil {
		e.cancel()
	}
	e.set.Close()
}

// Run runs the providers' background work until ctx ends, then waits for
// it to stop.
func (c *ProviderCache) Run(ctx context.Context) error {
	c.mu.Lock()
	c.ctx = ctx
	for _, e := range c.sets {
		c.start(e)
	}
	c.mu.Unlock()
	<-ctx.Done()
	c.mu.Lock()
	c.ctx = nil
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// Config returns the dso.yaml at path (the fallback for "").
func (c *ProviderCache) Config(path string) (*config.Config, error) {
	if path == "" {
		return c.Fallback, nil
	}
	cfg, err := config.Load(path)
	return cfg, config.Positions(err)
}

// Close releases every set.
func (c *ProviderCache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.sets {
		c.release(e)
	}
	c.sets = nil
}
