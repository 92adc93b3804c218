// Package agentcmd implements `docker dso agent`: the agent in the
// foreground (what systemd runs, or what `docker dso up` starts in the
// background for the user in local mode), and `docker dso agent stop`.
package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/dso-project/dso/internal/agent"
	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/notify"
	"github.com/dso-project/dso/internal/provider/local"
	"github.com/dso-project/dso/internal/resolve"
	"github.com/dso-project/dso/internal/state"
	"github.com/dso-project/dso/internal/watch"
)

// Options are the inputs of `docker dso agent`.
type Options struct {
	Factory *cmdutil.Factory
	Local   bool
}

// NewCmd returns `docker dso agent`.
func NewCmd(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{Factory: f}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent that delivers and rotates secrets (foreground)",
		Long: `Run the agent in the foreground. It delivers secrets to managed containers
whenever they start (first start, docker restart, restart policy, daemon
restart), polls the versions of the secrets they hold and rotates them when
one changes. systemd runs it as the dso-agent service; in local mode
'docker dso up' starts it for the user with --local when none runs.

Environment: DSO_WEBHOOK_SECRET, when set, lets POST /webhook requests
signed with HMAC-SHA256 of their body (header X-DSO-Signature) trigger a check.
DSO_API_ADDR overrides the address of the REST API (agent.api.address).

The agent.notify entries of dso.yaml receive a signed JSON POST when a
rotation succeeds or fails (rotation.succeeded, rotation.failed).`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return run(cmd, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Local, "local", false, "Run as the user's local agent (lock, state and socket under ~/.dso/run)")
	cmd.AddCommand(newCmdStop(f))
	return cmd
}

// paths are where an agent keeps its lock, state and socket.
type paths struct{ lock, state, socket string }

func agentPaths(local bool, cfg *config.Config) (paths, error) {
	if !local {
		sock := api.DefaultSocketPath
		if cfg != nil && cfg.Agent.Socket != "" {
			sock = cfg.Agent.Socket
		}
		return paths{lock: agent.SystemLock, state: state.DefaultPath, socket: sock}, nil
	}
	dir, err := agent.LocalDir()
	if err != nil {
		return paths{}, err
	}
	sock, err := api.LocalSocketPath()
	if err != nil {
		return paths{}, err
	}
	return paths{lock: filepath.Join(dir, "agent.lock"), state: filepath.Join(dir, "state.db"), socket: sock}, nil
}

func run(cmd *cobra.Command, opts *Options) error {
	f := opts.Factory
	var cfg *config.Config
	if f.ConfigPath != "" || !opts.Local {
		var err error
		if cfg, err = config.Load(f.ConfigPath); err != nil && (f.ConfigPath != "" || !errors.Is(err, config.ErrNoFile)) {
			return cmdutil.WithExitCode(cmdutil.ExitConfig, err)
		}
	}
	p, err := agentPaths(opts.Local, cfg)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// A daemon with a small live heap that allocates little when idle:
		// collecting at 50% growth instead of 100% kept an agent watching
		// 10,000 secrets about 5 MB smaller at no measurable CPU cost
		// (test/bench BenchmarkAgentIdle10k).
		debug.SetGCPercent(50)
	}
	lock, err := agent.AcquireLock(p.lock)
	if err != nil {
		return err
	}
	defer lock.Release()

	var handler slog.Handler = slog.NewJSONHandler(f.IO.ErrOut, nil)
	if f.IO.IsStderrTTY() {
		handler = slog.NewTextHandler(f.IO.ErrOut, nil)
	}
	log := slog.New(handler)

	if err := os.MkdirAll(filepath.Dir(p.state), 0o700); err != nil {
		return err
	}
	store, err := state.Open(p.state, state.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	docker, err := f.Docker()
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	cache := &agent.ProviderCache{Registry: resolve.Default(), Fallback: cfg}
	defer cache.Close()
	bus := events.NewBus(1000)
	m := metrics.New()
	id := agent.SystemID
	if opts.Local {
		id = agent.LocalID(filepath.Dir(p.lock))
	}
	ao := agent.Options{Docker: docker, ID: id, Providers: cache.Get, Configs: cache.Config, Log: log, Store: store, Metrics: m, Bus: bus}
	if cfg != nil {
		ao.PollInterval = cfg.Agent.Watch.PollingInterval.D()
		ao.HealthTimeout = cfg.Agent.Rotation.HealthCheckTimeout.D()
	}
	var notifiers notify.Set
	if cfg != nil {
		if notifiers, err = notify.FromConfig(cfg.Agent.Notify, log); err != nil {
			return cmdutil.WithExitCode(cmdutil.ExitConfig, err)
		}
		if len(notifiers) > 0 {
			ao.Notify = notifiers.Enqueue
		}
	}
	ag, err := agent.New(ao)
	if err != nil {
		return err
	}
	trigger := ag.Trigger

	localAPI, err := api.NewLocal(api.LocalConfig{Path: p.socket, Health: ag.Health, Status: ag.Status, Bus: bus, Trigger: trigger, Log: log})
	if err != nil {
		return err
	}
	if err := localAPI.Listen(); err != nil {
		return fmt.Errorf("agent socket: %w", err)
	}
	rc := api.RESTConfig{Health: ag.Health, Registry: m.Registry, Bus: bus, Trigger: trigger, Log: log,
		WebhookSecret: []byte(os.Getenv("DSO_WEBHOOK_SECRET"))}
	if cfg != nil {
		rc.Addr, rc.Token, rc.WebhookToken = cfg.Agent.API.Address, cfg.Agent.API.Token, cfg.Agent.API.Token
	}
	if addr := os.Getenv("DSO_API_ADDR"); addr != "" {
		rc.Addr = addr
	}
	rest, err := api.NewREST(rc)
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitConfig, err)
	}
	restUp := true
	if err := rest.Listen(); err != nil {
		if !opts.Local {
			return fmt.Errorf("REST API: %w", err)
		}
		restUp = false
		log.Warn("REST API not started (local agent)", "error", err)
	}

	log.Info("dso agent starting", "local", opts.Local, "pid", syscall.Getpid(), "socket", p.socket)
	g, ctx := errgroup.WithContext(cmd.Context())
	g.Go(func() error { return ag.Run(ctx) })
	g.Go(func() error { return localAPI.Run(ctx) })
	if len(notifiers) > 0 {
		g.Go(func() error { return notifiers.Run(ctx) })
	}
	if restUp {
		g.Go(func() error { return rest.Run(ctx) })
	}
	for _, vault := range localVaults(cfg) {
		g.Go(func() error {
			return watch.WatchFile(ctx, watch.RealClock{}, vault, 250*time.Millisecond, func() { ag.Watcher().Trigger() })
		})
	}
	err = g.Wait()
	log.Info("dso agent stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// localVaults are the local vault files whose changes the agent notices
// within a second: the default one and those dso.yaml names.
func localVaults(cfg *config.Config) []string {
	var out []string
	if p, err := local.DefaultPaths(os.Getenv); err == nil {
		out = append(out, p.Vault)
	}
	if cfg != nil {
		for _, pc := range cfg.Providers {
			if pc.Type == config.ProviderLocal && pc.VaultFile != "" {
				out = append(out, pc.VaultFile)
			}
		}
	}
	return out
}

func newCmdStop(f *cmdutil.Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop the user's local agent",
		Args:  cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := agentPaths(true, nil)
			if err != nil {
				return err
			}
			if !agent.Held(p.lock) {
				fmt.Fprintln(f.IO.Out, "no local agent is running")
				return nil
			}
			pid, err := agent.LockHolder(p.lock)
			if err != nil {
				return fmt.Errorf("read %s: %w", p.lock, err)
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				return fmt.Errorf("stop the local agent (pid %d): %w", pid, err)
			}
			for i := 0; i < 200 && agent.Held(p.lock); i++ {
				time.Sleep(50 * time.Millisecond)
			}
			if agent.Held(p.lock) {
				return fmt.Errorf("the local agent (pid %d) did not stop within 10s", pid)
			}
			fmt.Fprintf(f.IO.Out, "stopped the local agent (pid %d)\n", pid)
			return nil
		},
	}
}
