// Package systemcmd implements `docker dso system`: enable, disable,
// status and restart of dso-agent.service through systemctl, the agent's
// log through journalctl or, with --api, the agent's REST API, and the
// unit's text.
package systemcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/systemd"
)

// Options are the inputs of the `docker dso system` subcommands.
type Options struct {
	Factory *cmdutil.Factory
	Action  string // enable, disable, status, restart or logs

	// logs
	Follow   bool
	Priority string
	Since    string
	API      bool
	APIAddr  string
	// APIToken is read from DSO_API_TOKEN (never a flag: argv is public).
	APIToken string
}

// NewCmd returns `docker dso system`. runF, when set, replaces the
// behaviour of every subcommand.
func NewCmd(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "system",
		Short: "Manage the agent's systemd service",
		Args:  cmdutil.NoArgs,
	}
	for _, a := range []struct{ name, short string }{
		{"enable", "Enable the agent at boot and start it now"},
		{"disable", "Disable the agent at boot and stop it now"},
		{"status", "Show the agent service's status"},
		{"restart", "Restart the agent"},
	} {
		opts := &Options{Factory: f, Action: a.name}
		cmd.AddCommand(&cobra.Command{
			Use:   a.name,
			Short: a.short,
			Args:  cmdutil.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				if runF != nil {
					return runF(opts)
				}
				return runSystemctl(cmd.Context(), opts)
			},
		})
	}
	cmd.AddCommand(newLogsCmd(f, runF), newUnitCmd(f))
	return cmd
}

func newLogsCmd(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{Factory: f, Action: "logs"}
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Show the agent's log (journald, or the REST API with --api)",
		Example: `  docker dso system logs -f
  docker dso system logs -p err --since 1h
  docker dso system logs --api --api-addr http://localhost:8471`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Priority != "" {
				if err := systemd.CheckPriority(opts.Priority); err != nil {
					return cmdutil.UsageError(cmd, err)
				}
			}
			if opts.Since != "" {
				if _, err := systemd.ParseSince(opts.Since, time.Now()); err != nil {
					return cmdutil.UsageError(cmd, err)
				}
			}
			if cmd.Flags().Changed("api-addr") && !opts.API {
				return cmdutil.UsageError(cmd, errors.New("--api-addr needs --api"))
			}
			opts.APIToken = os.Getenv("DSO_API_TOKEN")
			if runF != nil {
				return runF(opts)
			}
			if opts.API {
				return runAPILogs(cmd.Context(), opts)
			}
			return runJournal(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "Keep printing new lines")
	cmd.Flags().StringVarP(&opts.Priority, "priority", "p", "", "Only lines at this priority or more severe: "+strings.Join(systemd.Priorities, ", "))
	cmd.Flags().StringVar(&opts.Since, "since", "", `Only lines since this long ago (1h, 30m) or this time ("2006-01-02 15:04:05")`)
	cmd.Flags().BoolVar(&opts.API, "api", false, "Read from the agent's REST API instead of journald (token from $DSO_API_TOKEN)")
	cmd.Flags().StringVar(&opts.APIAddr, "api-addr", "http://"+api.DefaultRESTAddr, "URL of the agent's REST API")
	return cmd
}

// needSystemd explains what to do on a host where systemctl cannot work.
func needSystemd(program string) (string, error) {
	path, err := exec.LookPath(program)
	if err != nil {
		return "", fmt.Errorf("%w: %s is not installed on this host; run the agent in the foreground with `docker dso agent`, and read its log with `docker dso system logs --api`", systemd.ErrNoSystemd, program)
	}
	if program == "systemctl" && !systemd.Running("/") {
		return "", fmt.Errorf("%w: this host was not booted with systemd; run the agent in the foreground with `docker dso agent`, and read its log with `docker dso system logs --api`", systemd.ErrNoSystemd)
	}
	return path, nil
}

func runSystemctl(ctx context.Context, opts *Options) error {
	args, err := systemd.SystemctlArgs(opts.Action)
	if err != nil {
		return err
	}
	path, err := needSystemd("systemctl")
	if err != nil {
		return err
	}
	return runProgram(ctx, opts, path, args)
}

func runJournal(ctx context.Context, opts *Options) error {
	path, err := needSystemd("journalctl")
	if err != nil {
		return err
	}
	var since time.Time
	if opts.Since != "" {
		since, _ = systemd.ParseSince(opts.Since, time.Now())
	}
	return runProgram(ctx, opts, path, systemd.JournalctlArgs(opts.Follow, opts.Priority, since))
}

// runProgram runs path with args, its output going to the command's
// streams. A failure exit is reported by the program itself.
func runProgram(ctx context.Context, opts *Options, path string, args []string) error {
	c := exec.CommandContext(ctx, path, args...)
	c.Stdout, c.Stderr = opts.Factory.IO.Out, opts.Factory.IO.ErrOut
	if err := c.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ctx.Err() != nil {
				return nil
			}
			return cmdutil.ErrSilent
		}
		return err
	}
	return nil
}

// priorityOf maps an event's slog level name to a syslog priority.
func priorityOf(level string) int {
	switch strings.ToUpper(level) {
	case "ERROR":
		return 3
	case "WARN":
		return 4
	case "DEBUG":
		return 7
	}
	return 6
}

func priorityNumber(p string) int {
	if i := slices.Index(systemd.Priorities, p); i >= 0 {
		return i
	}
	return int(p[0] - '0')
}

const apiHistory = 1000

func runAPILogs(ctx context.Context, opts *Options) error {
	client, err := api.NewRESTClient(opts.APIAddr, opts.APIToken)
	if err != nil {
		return err
	}
	var since time.Time
	if opts.Since != "" {
		since, _ = systemd.ParseSince(opts.Since, time.Now())
	}
	maxPrio := 7
	if opts.Priority != "" {
		maxPrio = priorityNumber(opts.Priority)
	}
	return client.Events(ctx, apiHistory, opts.Follow, func(e events.Event) error {
		if e.Time.Before(since) || priorityOf(e.Level) > maxPrio {
			return nil
		}
		return printEvent(opts.Factory.IO.Out, e)
	})
}

// printEvent writes one event as a log line: time, level, type, message,
// then its fields as key=value.
func printEvent(w io.Writer, e events.Event) error {
	level := e.Level
	if level == "" {
		level = "INFO"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-5s %s", e.Time.Local().Format(time.RFC3339), level, e.Type)
	if e.Message != "" {
		fmt.Fprintf(&b, " %q", e.Message)
	}
	for _, kv := range [][2]string{{"project", e.Project}, {"service", e.Service}, {"container", e.Container}, {"secret", e.Secret}, {"version", e.Version}, {"provider", e.Provider}, {"strategy", e.Strategy}, {"result", e.Result}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(e.Attrs)) {
		fmt.Fprintf(&b, " %s=%q", k, e.Attrs[k])
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}
