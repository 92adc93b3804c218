// Package agentcmd implements `docker dso agent`: the agent in the
// foreground (what systemd runs, or what `docker dso up` starts in the
// background for the user in local mode), and `docker dso agent stop`.
package agentcmd

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/agent"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/resolve"
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
		Short: "Run the agent that delivers secrets to containers (foreground)",
		Long: `Run the agent in the foreground. It delivers secrets to managed containers
whenever they start (first start, docker restart, restart policy, daemon
restart). systemd runs it as the dso-agent service; in local mode
'docker dso up' starts it for the user with --local when none runs.`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return run(cmd, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Local, "local", false, "Run as the user's local agent (lock and log under ~/.dso/run)")
	cmd.AddCommand(newCmdStop(f))
	return cmd
}

func lockPath(local bool) (string, error) {
	if !local {
		return agent.SystemLock, nil
	}
	dir, err := agent.LocalDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "agent.lock"), nil
}

func run(cmd *cobra.Command, opts *Options) error {
	f := opts.Factory
	path, err := lockPath(opts.Local)
	if err != nil {
		return err
	}
	lock, err := agent.AcquireLock(path)
	if err != nil {
		return err
	}
	defer lock.Release()

	var handler slog.Handler = slog.NewJSONHandler(f.IO.ErrOut, nil)
	if f.IO.IsStderrTTY() {
		handler = slog.NewTextHandler(f.IO.ErrOut, nil)
	}
	log := slog.New(handler)

	var fallback *config.Config
	if f.ConfigPath != "" || !opts.Local {
		if fallback, err = config.Load(f.ConfigPath); err != nil && (f.ConfigPath != "" || !errors.Is(err, config.ErrNoFile)) {
			return cmdutil.WithExitCode(cmdutil.ExitConfig, err)
		}
	}
	docker, err := f.Docker()
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	cache := &agent.ProviderCache{Registry: resolve.Default(), Fallback: fallback}
	defer cache.Close()
	log.Info("dso agent starting", "local", opts.Local, "pid", syscall.Getpid())
	err = agent.New(agent.Options{Docker: docker, Providers: cache.Get, Log: log}).Run(cmd.Context())
	log.Info("dso agent stopped")
	return err
}

func newCmdStop(f *cmdutil.Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop the user's local agent",
		Args:  cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := lockPath(true)
			if err != nil {
				return err
			}
			if !agent.Held(path) {
				fmt.Fprintln(f.IO.Out, "no local agent is running")
				return nil
			}
			pid, err := agent.LockHolder(path)
			if err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				return fmt.Errorf("stop the local agent (pid %d): %w", pid, err)
			}
			for i := 0; i < 100 && agent.Held(path); i++ {
				time.Sleep(50 * time.Millisecond)
			}
			if agent.Held(path) {
				return fmt.Errorf("the local agent (pid %d) did not stop within 5s", pid)
			}
			fmt.Fprintf(f.IO.Out, "stopped the local agent (pid %d)\n", pid)
			return nil
		},
	}
}
