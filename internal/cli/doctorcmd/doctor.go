// Package doctorcmd implements `docker dso doctor`: it checks what dso needs
// on this host (the Docker engine, Compose v2, the plugin and dso-init,
// dso.yaml, each configured provider and, at level full, each secret dso.yaml
// maps and the agent with its socket) and says, for each finding, what to
// do. It reads versions only, never a secret value.
package doctorcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cmdutil"
)

// Levels of `doctor --level`.
const (
	LevelBasic = "basic"
	LevelFull  = "full"
)

// Options are the inputs of `docker dso doctor`.
type Options struct {
	Factory *cmdutil.Factory
	Level   string
	JSON    bool
}

// NewCmd returns `docker dso doctor`.
func NewCmd(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{Factory: f}
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check the engine, Compose, the plugin, dso.yaml, the providers and the agent, and say what to fix",
		Long: `Check what dso needs on this host and say, for each finding, what to do.

Level basic: the Docker engine and its API version, Compose v2, the docker-dso
plugin and dso-init, dso.yaml, and each configured provider (reachable and
authenticated, by one cheap version check).
Level full adds: each secret that dso.yaml maps is readable (its version is
read, never its value), the agent runs and answers on its socket, and the
socket's permissions.

The exit code is 0 when nothing failed, 3 when dso.yaml is the problem, 6 for
anything else that failed. Warnings do not change it.`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Level != LevelBasic && opts.Level != LevelFull {
				return cmdutil.UsageError(cmd, fmt.Errorf("--level %q: want basic or full", opts.Level))
			}
			if runF != nil {
				return runF(opts)
			}
			return run(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Level, "level", LevelBasic, "How much to check: basic or full")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print the findings as JSON")
	return cmd
}

// Status is the outcome of one check.
type Status string

// Statuses, from good to bad.
const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
)

// Finding is the result of one check.
type Finding struct {
	Check  string `json:"check"`         // what was checked
	Status Status `json:"status"`        // ok, warn or fail
	Detail string `json:"detail"`        // what was found
	Fix    string `json:"fix,omitempty"` // what to do, when not ok
	// config marks a finding about dso.yaml itself (exit code 3 on failure).
	config bool
}

// Report is what `doctor --json` prints.
type Report struct {
	Level    string    `json:"level"`
	Findings []Finding `json:"findings"`
	OK       int       `json:"ok"`
	Warnings int       `json:"warnings"`
	Failures int       `json:"failures"`
}

func run(ctx context.Context, opts *Options) error {
	d := &doctor{f: opts.Factory, full: opts.Level == LevelFull}
	d.checkAll(ctx)
	rep := Report{Level: opts.Level, Findings: d.findings}
	configFailed := false
	for _, fd := range d.findings {
		switch fd.Status {
		case StatusOK:
			rep.OK++
		case StatusWarn:
			rep.Warnings++
		case StatusFail:
			rep.Failures++
			configFailed = configFailed || fd.config
		}
	}
	out := opts.Factory.IO.Out
	if opts.JSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(out, rep)
	}
	if rep.Failures == 0 {
		return nil
	}
	code := cmdutil.ExitBackend
	if configFailed {
		code = cmdutil.ExitConfig
	}
	return cmdutil.WithExitCode(code, cmdutil.ErrSilent)
}

func printReport(out io.Writer, rep Report) {
	fmt.Fprintf(out, "dso doctor (level %s)\n\n", rep.Level)
	for _, fd := range rep.Findings {
		mark := map[Status]string{StatusOK: "ok  ", StatusWarn: "WARN", StatusFail: "FAIL"}[fd.Status]
		fmt.Fprintf(out, "%s  %s\n", mark, fd.Check)
		fmt.Fprintf(out, "      %s\n", indent(fd.Detail))
		if fd.Fix != "" {
			fmt.Fprintf(out, "      fix: %s\n", indent(fd.Fix))
		}
	}
	fmt.Fprintf(out, "\n%d ok, %d warning(s), %d failed\n", rep.OK, rep.Warnings, rep.Failures)
}

// indent keeps the lines of a multi-line text under the first one.
func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n      ") }
