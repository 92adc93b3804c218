// Package agentcmd implements `docker dso agent`: the agent in the
// foreground (what systemd runs, or what `docker dso up` starts in the
// background for the user in local mode), and `docker dso agent stop`.
package agentcmd

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/agent"
	"github.com/dso-project/dso/internal/agentctl"
	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/cmdutil"
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

Environment: DSO_WEBHOOK_SECRET, when set, lets signed POST /webhook requests
trigger a check: X-DSO-Timestamp (Unix seconds, within 5 minutes) and
X-DSO-Signature (sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">), each
signature used once.
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

func run(cmd *cobra.Command, opts *Options) error {
	f := opts.Factory
	var handler slog.Handler = slog.NewJSONHandler(f.IO.ErrOut, nil)
	if f.IO.IsStderrTTY() {
		handler = slog.NewTextHandler(f.IO.ErrOut, nil)
	}
	err := agent.Serve(cmd.Context(), agent.DaemonOptions{
		Local:      opts.Local,
		ConfigPath: f.ConfigPath,
		Log:        slog.New(handler),
		Docker: func() (agent.Docker, error) {
			d, err := f.Docker()
			if err != nil {
				return nil, cmdutil.WithExitCode(cmdutil.ExitBackend, err)
			}
			return d, nil
		},
	})
	if _, ok := errors.AsType[*agent.ConfigError](err); ok {
		return cmdutil.WithExitCode(cmdutil.ExitConfig, err)
	}
	return err
}

func newCmdStop(f *cmdutil.Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop the user's local agent",
		Args:  cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := agentctl.StopLocal(cmd.Context(), clock.RealClock{})
			if err != nil {
				return err
			}
			if pid == 0 {
				fmt.Fprintln(f.IO.Out, "no local agent is running")
				return nil
			}
			fmt.Fprintf(f.IO.Out, "stopped the local agent (pid %d)\n", pid)
			return nil
		},
	}
}
