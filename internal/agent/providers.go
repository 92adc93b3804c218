package agent

import (
	"os"
	"sync"
	"time"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/resolve"
)

// ProviderCache builds provider sets per dso.yaml path, once, and again when
// the file changes. The path "" stands for fallback (the agent's own
// configuration, or the local vault at its default place when nil).
type ProviderCache struct {
	Registry *resolve.Registry
	Fallback *config.Config

	mu   sync.Mutex
	sets map[string]cached
}

type cached struct {
	set   *resolve.Set
	mtime time.Time
}

// Get returns the set for the dso.yaml at path.
func (c *ProviderCache) Get(path string) (*resolve.Set, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sets == nil {
		c.sets = map[string]cached{}
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
		old.set.Close()
	}
	c.sets[path] = cached{set: set, mtime: mtime}
	return set, nil
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
		e.set.Close()
	}
	c.sets = nil
}
