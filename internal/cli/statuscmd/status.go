// Package statuscmd implements `docker dso status` (the agent's health,
// watched secrets, managed containers and recent rotations) and
// `docker dso watch` (the live event stream). Both ask the agent over its
// local socket; neither ever shows a secret value.
package statuscmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/agentctl"
	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/config"
)

// agentClient reaches the running agent, on the socket dso.yaml's
// agent.socket names when there is a dso.yaml.
func agentClient(ctx context.Context, f *cmdutil.Factory) (*api.Client, error) {
	cfg, _, err := config.Find(f.ConfigPath)
	if err != nil {
		return nil, cmdutil.WithExitCode(cmdutil.ExitConfig, err)
	}
	if _, err := agentctl.Revive(ctx, clock.RealClock{}, f.IO.ErrOut); err != nil {
		return nil, cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	c, err := agentctl.Dial(cfg)
	if err != nil {
		return nil, cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	return c, nil
}

// Options are the inputs of `docker dso status`.
type Options struct {
	Factory *cmdutil.Factory
	JSON    bool
	Watch   bool
}

// NewCmd returns `docker dso status`.
func NewCmd(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{Factory: f}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the agent, the secrets it watches, the containers it manages and recent rotations",
		Args:  cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return run(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print as JSON")
	cmd.Flags().BoolVar(&opts.Watch, "watch", false, "Refresh every 2 seconds until interrupted")
	return cmd
}

func run(ctx context.Context, opts *Options) error {
	c, err := agentClient(ctx, opts.Factory)
	if err != nil {
		return err
	}
	out := opts.Factory.IO.Out
	for {
		st, err := c.Status(ctx)
		if err != nil {
			return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
		}
		if opts.Watch && opts.Factory.IO.IsStdoutTTY() {
			fmt.Fprint(out, "\033[H\033[2J")
		}
		if opts.JSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			if err := enc.Encode(st); err != nil {
				return err
			}
		} else {
			printStatus(out, st)
		}
		if !opts.Watch {
			return nil
		}
		if clock.Sleep(ctx, clock.RealClock{}, 2*time.Second) != nil {
			return nil
		}
	}
}

// printSwarm prints the services of Swarm stacks that mount DSO secrets.
func printSwarm(out io.Writer, services []api.SwarmService) {
	if len(services) == 0 {
		return
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(out, "\nSwarm services (%d):\n", len(services))
	fmt.Fprintln(tw, "  STACK\tSERVICE\tUPDATE\tTASK\tNODE\tSTATE\tSECRETS (version held)")
	for _, s := range services {
		update := s.Update
		if update == "" {
			update = "-"
		}
		if len(s.Tasks) == 0 {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t-\t-\t-\t-\n", s.Stack, s.Name, update)
		}
		for _, t := range s.Tasks {
			held := make([]string, 0, len(t.Secrets))
			for ref, v := range t.Secrets {
				held = append(held, ref+"@"+v)
			}
			sort.Strings(held)
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s.%d\t%s\t%s\t%s\n", s.Stack, s.Name, update, s.Name, t.Slot, shortNode(t.Node), t.State, strings.Join(held, " "))
		}
	}
	tw.Flush()
}

func shortNode(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func printStatus(out io.Writer, st api.Status) {
	a := st.Agent
	fmt.Fprintf(out, "Agent: %s (version %s, pid %d, up since %s)\n", a.Health, a.Version, a.PID, a.StartedAt.Format(time.RFC3339))
	for _, p := range a.Problems {
		fmt.Fprintf(out, "  problem: %s\n", p)
	}
	ports := "published by Docker"
	switch {
	case st.BindsHostPorts:
		ports = "bound by the agent"
	case st.HostPortsNote != "":
		ports += " (" + st.HostPortsNote + ")"
	}
	fmt.Fprintf(out, "Proxies' host ports: %s\n", ports)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(out, "\nWatched secrets (%d):\n", len(st.Secrets))
	fmt.Fprintln(tw, "  SECRET\tVERSION\tLAST CHECK\tNEXT CHECK\tSTATE")
	for _, s := range st.Secrets {
		state := "ok"
		if s.Failing {
			state = "failing"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.Name, s.Version, ago(s.LastCheck), ago(s.NextCheck), state)
	}
	tw.Flush()
	if len(st.Waiting) > 0 {
		fmt.Fprintf(out, "\nWaiting for their secrets (%d):\n", len(st.Waiting))
		fmt.Fprintln(tw, "  CONTAINER\tNAME\tSERVICE\tATTEMPTS\tINIT GIVES UP\tWHY")
		for _, w := range st.Waiting {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\n", w.ID, w.Name, w.Project+"/"+w.Service, w.Attempts, ago(w.Deadline), w.Reason)
		}
		tw.Flush()
	}
	fmt.Fprintf(out, "\nManaged containers (%d):\n", len(st.Containers))
	fmt.Fprintln(tw, "  CONTAINER\tNAME\tSERVICE\tSECRETS (version held)")
	for _, c := range st.Containers {
		var held []string
		for k, v := range c.Secrets {
			if at, ok := c.FromCache[k]; ok {
				v += " (from the cache, confirmed " + ago(at) + ")"
			}
			held = append(held, k+"@"+v)
		}
		sort.Strings(held)
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.ID, c.Name, c.Project+"/"+c.Service, strings.Join(held, " "))
	}
	tw.Flush()
	printSwarm(out, st.Swarm)
	fmt.Fprintf(out, "\nRecent rotations (%d):\n", len(st.Rotations))
	fmt.Fprintln(tw, "  ID\tSERVICE\tSTRATEGY\tRESULT\tSTARTED\tSTEP\tERROR / RECOVERY")
	for _, r := range st.Rotations {
		note := strings.TrimSpace(r.Error + " " + r.Recovery)
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Service, r.Strategy, r.Result, r.Started.Format(time.TimeOnly), r.Step, note)
	}
	tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Until(t).Round(time.Second)
	if d < 0 {
		return (-d).String() + " ago"
	}
	return "in " + d.String()
}

// NewCmdWatch returns `docker dso watch`.
func NewCmdWatch(f *cmdutil.Factory) *cobra.Command {
	var debug bool
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Stream the agent's events live: deliveries, rotations, provider errors, container events",
		Args:  cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := agentClient(cmd.Context(), f)
			if err != nil {
				return err
			}
			out := f.IO.Out
			err = c.Events(cmd.Context(), 20, true, func(e events.Event) error {
				if debug {
					return json.NewEncoder(out).Encode(e)
				}
				line := fmt.Sprintf("%s %-14s", e.Time.Format(time.TimeOnly), e.Type)
				for _, kv := range [][2]string{{"project", e.Project}, {"service", e.Service}, {"container", e.Container}, {"secret", e.Secret}, {"strategy", e.Strategy}, {"result", e.Result}} {
					if kv[1] != "" {
						line += " " + kv[0] + "=" + kv[1]
					}
				}
				if e.Message != "" {
					line += "  " + e.Message
				}
				_, err := fmt.Fprintln(out, line)
				return err
			})
			if err != nil && cmd.Context().Err() == nil {
				return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&debug, "debug", false, "Print each event's raw JSON payload")
	return cmd
}
