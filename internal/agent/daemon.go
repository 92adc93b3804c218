package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"github.com/dso-project/dso/internal/agentctl"
	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/notify"
	"github.com/dso-project/dso/internal/provider/local"
	"github.com/dso-project/dso/internal/resolve"
	"github.com/dso-project/dso/internal/secretcache"
	"github.com/dso-project/dso/internal/state"
	"github.com/dso-project/dso/internal/swarm/driver"
	"github.com/dso-project/dso/internal/watch"
)

// DaemonOptions are the inputs of the daemon (`docker dso agent`).
type DaemonOptions struct {
	// Local runs the user's local agent (lock, state and socket under
	// ~/.dso/run) instead of the system agent.
	Local bool
	// ConfigPath is the -c flag ("" when unset): the system agent then
	// looks for dso.yaml where config.Find does (and may run without one);
	// the local agent runs without one.
	ConfigPath string
	// Docker returns the engine client; it is called once the lock is held.
	Docker func() (Docker, error)
	Log    *slog.Logger
	// Getenv reads DSO_WEBHOOK_SECRET, DSO_API_ADDR and
	// DSO_SWARM_DRIVER_SOCKET (os.Getenv when nil).
	Getenv func(string) string
	Clock  clock.Clock
}

// ConfigError is a daemon start refused because of its configuration.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Serve runs the daemon until ctx is cancelled: it loads its dso.yaml,
// marks the process not dumpable, takes the agent's lock, opens the state
// store, then starts its components in order (the providers' background
// work, the agent itself, the local API, the REST API, notifications, the
// Swarm secret driver when the engine is a Swarm manager, the local vault
// file watches) and, when ctx ends, stops them in reverse order. A component that fails is reported as degraded in
// /health and status and started again with backoff; it does not stop the
// others. A cancelled ctx is not an error.
func Serve(ctx context.Context, o DaemonOptions) error {
	// The agent serves no heap profile: without this, the runtime samples
	// an allocation every 512 KiB into a hash table of about 1.4 MB, which
	// a long-lived daemon ends up touching whole (of an idle agent's RSS
	// with 10,000 secrets, test/bench BenchmarkAgentIdle10k).
	runtime.MemProfileRate = 0
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	log := o.Log
	var cfg *config.Config
	var cfgPath string
	if o.ConfigPath != "" || !o.Local {
		var err error
		if cfg, cfgPath, err = config.Find(o.ConfigPath); err != nil {
			return &ConfigError{err}
		}
	}
	where, err := agentctl.Locate(o.Local, cfg)
	if err != nil {
		return err
	}
	if o.Getenv("GOGC") == "" {
		// A daemon with a small live heap that allocates little when idle:
		// collecting at 50% growth instead of 100% keeps an agent watching
		// 10,000 secrets about 10 MB smaller at no measurable CPU cost
		// (test/bench BenchmarkAgentIdle10k: RSS up to 64 MB at 100%, 49 MB
		// at 50%, CPU 0.3% of a core either way). Without it, the heap
		// left by a burst (a 10,000-secret status, deliveries) is given
		// back only after a collection that the idle agent reaches late.
		debug.SetGCPercent(50)
	}
	// The agent holds secret values in memory: no core dump, no ptrace by
	// other processes of the same user.
	if err := notDumpable(); err != nil {
		log.Warn("could not mark the agent not dumpable", "error", err)
	}
	lock, err := agentctl.AcquireLock(where.Lock)
	if err != nil {
		return err
	}
	defer lock.Release()

	if err := os.MkdirAll(filepath.Dir(where.State), 0o700); err != nil {
		return err
	}
	store, err := state.Open(where.State, state.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	docker, err := o.Docker()
	if err != nil {
		return err
	}
	providers := &ProviderCache{Registry: resolve.Default(), Fallback: cfg}
	defer providers.Close()
	if cfg != nil {
		// The agent's own providers are built now, so that their background
		// work (a Vault token's renewal) starts with the agent, not at the
		// first delivery.
		if _, err := providers.Get(""); err != nil {
			log.Warn("cannot build the providers of the agent's dso.yaml yet", "error", err)
		}
	}
	bus := events.NewBus(1000)
	m := metrics.New()
	ao := Options{Docker: docker, ID: where.ID, Providers: providers.Get, Configs: providers.Config, OwnConfig: cfgPath, Log: log, Store: store, Metrics: m, Bus: bus, Clock: o.Clock}
	cacheCfg := config.Cache{Enabled: true, MaxAge: config.DefaultCacheMaxAge}
	if cfg != nil {
		cacheCfg = cfg.Agent.Cache
	}
	if cacheCfg.Enabled {
		ao.Cache = secretcache.New(cacheCfg.MaxAge.D(), o.Clock)
		defer ao.Cache.Close()
	}
	px := &Proxies{Docker: docker, Metrics: m, Agent: where.ID}
	m.Registry.MustRegister(px)
	ao.Proxy = px
	if nl, ok := docker.(networkLister); ok {
		ao.HostPorts = func(ctx context.Context) error { return hostPortsHere(ctx, nl) }
		if err := ao.HostPorts(ctx); err != nil {
			log.Info("Docker publishes the proxies' host ports", "reason", err.Error())
		} else {
			log.Info("the agent binds the proxies' host ports")
		}
	}
	// A test-only crash point (see Options.CrashAt).
	ao.CrashAt = os.Getenv("DSO_TEST_CRASH_AT")
	var notifiers notify.Set
	if cfg != nil {
		ao.PollInterval = cfg.Agent.Watch.PollingInterval.D()
		ao.Access = cfg.Agent.Access
		ao.HealthTimeout = cfg.Agent.Rotation.HealthCheckTimeout.D()
		ao.DrainTimeout = cfg.Agent.Rotation.DrainTimeout.D()
		if notifiers, err = notify.FromConfig(cfg.Agent.Notify, log); err != nil {
			return &ConfigError{err}
		}
		if len(notifiers) > 0 {
			ao.Notify = notifiers.Enqueue
		}
	}
	ag, err := New(ao)
	if err != nil {
		return err
	}
	providers.Failed = ag.degrade

	localAPI, err := api.NewLocal(api.LocalConfig{Path: where.Socket, Health: ag.Health, Status: ag.Status, Bus: bus, Trigger: ag.Trigger, Register: ag.Register, Log: log})
	if err != nil {
		return err
	}
	if err := localAPI.Listen(); err != nil {
		return fmt.Errorf("agent socket: %w", err)
	}
	rc := api.RESTConfig{Health: ag.Health, Registry: m.Registry, Bus: bus, Trigger: ag.Trigger, Log: log,
		WebhookSecret: []byte(o.Getenv("DSO_WEBHOOK_SECRET"))}
	if cfg != nil {
		rc.Addr, rc.Token, rc.WebhookToken = cfg.Agent.API.Address, cfg.Agent.API.Token, cfg.Agent.API.Token
		for _, e := range cfg.Agent.API.Open {
			rc.Open = append(rc.Open, string(e))
		}
	}
	if addr := o.Getenv("DSO_API_ADDR"); addr != "" {
		rc.Addr = addr
	}
	rest, err := api.NewREST(rc)
	if err != nil {
		return &ConfigError{err}
	}

	comps := []component{
		{name: "providers", run: providers.Run},
		{name: "agent", run: ag.Run},
		{name: "local API", run: localAPI.Run},
		{name: "REST API", run: func(ctx context.Context) error {
			if err := rest.Listen(); err != nil {
				return err
			}
			return rest.Run(ctx)
		}},
	}
	if len(notifiers) > 0 {
		comps = append(comps, component{name: "notifications", run: notifiers.Run})
	}
	if engine, ok := docker.(swarmInfo); ok {
		sock := driver.DefaultSocket
		if p := o.Getenv("DSO_SWARM_DRIVER_SOCKET"); p != "" {
			sock = p
		}
		comps = append(comps, swarmDriver(engine, o.Clock, driver.New(ag.swarmResolver(providers), log, m), sock))
	}
	swarmTrigger := func() {}
	if sd, ok := docker.(SwarmDocker); ok {
		rotator, run := ag.swarmRotation(sd, providers, cfg, ao.PollInterval)
		swarmTrigger = rotator.Trigger
		comps = append(comps, component{name: "swarm rotation", run: run})
	}
	for _, vault := range localVaults(cfg, o.Getenv) {
		changed := func() { ag.Watcher().Trigger(); ag.Wake(); swarmTrigger() }
		comps = append(comps, component{name: "watch " + vault, run: func(ctx context.Context) error {
			// A change while the watch was down (restarted after a
			// failure) is not missed: each run starts with a check.
			changed()
			return watch.WatchFile(ctx, o.Clock, vault, 250*time.Millisecond, changed)
		}})
	}
	log.Info("dso agent starting", "local", o.Local, "pid", os.Getpid(), "socket", where.Socket)
	supervise(ctx, o.Clock, log, ag, comps)
	log.Info("dso agent stopped")
	return nil
}

// localVaults are the local vault files whose changes the agent notices
// within a second: the default one and those dso.yaml names, each once.
func localVaults(cfg *config.Config, getenv func(string) string) []string {
	var out []string
	if p, err := local.DefaultPaths(getenv); err == nil {
		out = append(out, filepath.Clean(p.Vault))
	}
	if cfg != nil {
		for _, pc := range cfg.Providers {
			if pc.Type == config.ProviderLocal && pc.VaultFile != "" && !slices.Contains(out, filepath.Clean(pc.VaultFile)) {
				out = append(out, filepath.Clean(pc.VaultFile))
			}
		}
	}
	return out
}
