// Package stackcmd implements `docker dso stack`: `deploy` turns the
// stack's secret references into driver-backed Swarm secrets (named by
// version, labelled with the reference, no data) and runs
// `docker stack deploy` with an override that mounts them; `rm` also
// removes those secrets; `ps`, `ls` and `services` are passed on.
package stackcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cli/composecmd"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/resolve"
	"github.com/dso-project/dso/internal/rotate"
	"github.com/dso-project/dso/internal/swarm"
	"github.com/dso-project/dso/internal/swarm/driver"
)

// NewCmd returns `docker dso stack`.
func NewCmd(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stack",
		Short: "Deploy a compose file to Docker Swarm, with its secrets",
	}
	cmd.AddCommand(newCmdDeploy(f), newCmdRm(f))
	for _, p := range []struct{ name, short string }{
		{"ps", "List the tasks of a stack"},
		{"ls", "List the stacks"},
		{"services", "List the services of a stack"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:                p.name,
			Short:              p.short + " (docker stack " + p.name + ")",
			DisableFlagParsing: true,
			RunE: func(cmd *cobra.Command, args []string) error {
				return composecmd.RunDocker(cmd.Context(), f, nil, append([]string{"stack", p.name}, args...)...)
			},
		})
	}
	return cmd
}

// deployArgs is a `stack deploy` command line split into what dso reads and
// what it passes on.
type deployArgs struct {
	files  []string // -c/--compose-file
	config string   // --config: dso.yaml
	dryRun bool
	help   bool
	stack  string
	rest   []string // docker stack deploy's other flags
}

// valued are docker stack deploy's flags that take a value.
var valued = map[string]bool{"--resolve-image": true}

func parseDeploy(args []string) (deployArgs, error) {
	var d deployArgs
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(a, "=")
		if !strings.HasPrefix(a, "--") {
			name, value, hasValue = a, "", false
			if strings.HasPrefix(a, "-c") && len(a) > 2 {
				name, value, hasValue = "-c", a[2:], true
			}
		}
		takeValue := func() error {
			if hasValue {
				return nil
			}
			if i+1 >= len(args) {
				return fmt.Errorf("flag needs an argument: %s", name)
			}
			i++
			value = args[i]
			return nil
		}
		switch {
		case name == "-c" || name == "--compose-file":
			if err := takeValue(); err != nil {
				return d, err
			}
			d.files = append(d.files, value)
		case name == "--config":
			if err := takeValue(); err != nil {
				return d, err
			}
			d.config = value
		case a == "--dry-run":
			d.dryRun = true
		case a == "-h" || a == "--help":
			d.help = true
		case valued[name]:
			if err := takeValue(); err != nil {
				return d, err
			}
			d.rest = append(d.rest, name+"="+value)
		case strings.HasPrefix(a, "-"):
			d.rest = append(d.rest, a)
		case d.stack == "":
			d.stack = a
		default:
			return d, fmt.Errorf("one stack name expected, got %q and %q", d.stack, a)
		}
	}
	if !d.help && d.stack == "" {
		return d, errors.New("a stack name is required: docker dso stack deploy -c compose.yaml STACK")
	}
	if !d.help && len(d.files) == 0 {
		return d, errors.New("a compose file is required: docker dso stack deploy -c compose.yaml STACK")
	}
	return d, nil
}

func newCmdDeploy(f *cmdutil.Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "deploy [OPTIONS] STACK",
		Short: "Deploy a stack to Swarm, its secret references made driver-backed Swarm secrets",
		Long: `Deploy a stack to Swarm, as 'docker stack deploy' does, with its secrets.

Takes the flags of 'docker stack deploy' and these of its own:
  -c, --compose-file FILE   compose file (repeat for several)
      --config FILE         dso.yaml to use (default ./dso.yaml, then /etc/dso/dso.yaml)
      --dry-run             print the plan and change nothing

Every dso:// and dsofile:// reference is checked first. Each becomes a Swarm
secret served by the dso secret driver (the agent on every manager), named
by the secret's version and holding no data, mounted at /run/secrets/dso.VAR;
dso-init (installed on every node by the package) sets VAR from it before
the application starts: the value for dso://, the file's path for dsofile://.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDeploy(args)
			if err != nil {
				return cmdutil.UsageError(cmd, err)
			}
			if d.help {
				return cmd.Help()
			}
			if d.config == "" {
				d.config = f.ConfigPath
			}
			return deploy(cmd.Context(), f, d)
		},
	}
}

func deploy(ctx context.Context, f *cmdutil.Factory, d deployArgs) error {
	cfg, _, err := composecmd.LoadConfig(d.config)
	if err != nil {
		return err
	}
	p, err := compose.Load(ctx, compose.ProjectOptions{Files: d.files, Name: d.stack})
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitConfig, err)
	}
	uses, err := compose.FindUses(p, p.ServiceNames(), composecmd.LabelSecrets(cfg))
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitSecret, fmt.Errorf("stack %q:\n%w", d.stack, err))
	}
	argv := []string{"stack", "deploy"}
	for _, file := range p.ComposeFiles {
		argv = append(argv, "--compose-file", file)
	}
	if len(uses) == 0 {
		fmt.Fprintf(f.IO.ErrOut, "dso: no service of stack %q takes secrets; running docker stack deploy as it is\n", d.stack)
		return composecmd.RunDocker(ctx, f, nil, append(append(argv, d.rest...), d.stack)...)
	}
	if err := checkStrategies(p, uses, cfg); err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitConfig, err)
	}
	set, err := resolve.Default().Build(cfg)
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitConfig, err)
	}
	defer set.Close()
	versions, err := composecmd.Check(ctx, set, uses)
	if err != nil {
		return err
	}
	docker, err := f.Docker()
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	plan, err := compose.NewPlan(ctx, p, uses, compose.Wiring{}, composecmd.EngineImages(docker, p))
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitConfig, fmt.Errorf("%w\n(the images must be on the manager: pull or load them there first)", err))
	}
	sp, err := swarm.NewPlan(d.stack, plan.Services, versions)
	if err != nil {
		return err
	}
	override, err := sp.Override()
	if err != nil {
		return err
	}
	if d.dryRun {
		return printPlan(f.IO.Out, sp, override)
	}
	if err := checkManager(ctx, docker); err != nil {
		return err
	}
	for _, s := range sp.Secrets {
		if _, err := swarm.Ensure(ctx, docker, s); err != nil {
			return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
		}
	}
	argv = append(argv, "--compose-file", "-")
	return composecmd.RunDocker(ctx, f, override, append(append(argv, d.rest...), d.stack)...)
}

// checkStrategies refuses, before anything is made, a service whose
// strategy Swarm cannot apply: signal (a task's secrets are fixed when it
// starts), or one that is not known.
func checkStrategies(p *types.Project, uses []compose.Use, cfg *config.Config) error {
	var errs []error
	for _, name := range compose.Services(uses) {
		svc, err := p.GetService(name)
		if err != nil {
			return err
		}
		d, err := rotate.Decide(svc.Labels, cfg)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("service %q: %w", name, err))
		case d.Strategy == config.StrategySignal:
			errs = append(errs, fmt.Errorf("service %q: strategy signal cannot rotate a Swarm service (a task's secrets are fixed when it starts): use rolling, restart or none", name))
		}
	}
	return errors.Join(errs...)
}

// checkManager refuses an engine that cannot deploy a stack, before any
// secret is made.
func checkManager(ctx context.Context, docker client.APIClient) error {
	info, err := docker.Info(ctx, client.InfoOptions{})
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	if !info.Info.Swarm.ControlAvailable {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, errors.New("this Docker engine is not a Swarm manager: run on a manager (or point DOCKER_HOST at one), or `docker swarm init` first"))
	}
	return nil
}

func printPlan(out io.Writer, sp *swarm.Plan, override []byte) error {
	fmt.Fprintf(out, "Stack %s: %d Swarm secrets (driver %s, no data in Swarm):\n", sp.Stack, len(sp.Secrets), driver.Name)
	for _, s := range sp.Secrets {
		fmt.Fprintf(out, "  %s  %s  version %s\n", s.Name, s.Ref, s.Version)
	}
	fmt.Fprintf(out, "\nOverride given to docker stack deploy after the stack's files:\n%s", override)
	return nil
}

func newCmdRm(f *cmdutil.Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "rm STACK [STACK...]",
		Short: "Remove stacks and the Swarm secrets dso made for them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := composecmd.RunDocker(ctx, f, nil, append([]string{"stack", "rm"}, args...)...); err != nil {
				return err
			}
			docker, err := f.Docker()
			if err != nil {
				return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
			}
			var errs []error
			for _, stack := range args {
				errs = append(errs, removeSecrets(ctx, docker, stack))
			}
			return errors.Join(errs...)
		},
	}
}

// removeSecrets removes the DSO secrets of stack, waiting (up to 30s) for
// the services that used them to be gone.
func removeSecrets(ctx context.Context, docker client.APIClient, stack string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := docker.SecretList(ctx, client.SecretListOptions{Filters: make(client.Filters).Add("label", driver.LabelStack+"="+stack)})
		if err != nil {
			return err
		}
		var left []error
		for _, s := range list.Items {
			if _, err := docker.SecretRemove(ctx, s.ID, client.SecretRemoveOptions{}); err != nil {
				left = append(left, fmt.Errorf("secret %s: %w", s.Spec.Name, err))
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return errors.Join(left...)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
