package composecmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/agentctl"
	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/deliver"
	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/resolve"
	"github.com/dso-project/dso/internal/secretref"
)

// UpOptions are the inputs of `docker dso up`.
type UpOptions struct {
	Factory *cmdutil.Factory
	Args    []string // the command line after "up", compose flags included
	// Sub is the compose subcommand: up, create or run.
	Sub string
}

// NewCmdUp returns `docker dso up`; sub names the compose subcommand it
// wraps (up, create, run): each creates containers, so each is wired.
func NewCmdUp(f *cmdutil.Factory, sub string, runF func(*UpOptions) error) *cobra.Command {
	short := map[string]string{
		"up":     "Create and start the project's containers, with their secrets",
		"create": "Create the project's containers, wired for their secrets",
		"run":    "Run a one-off command on a service, with its secrets",
	}[sub]
	cmd := &cobra.Command{
		Use:   sub + " [OPTIONS] [SERVICE...]",
		Short: short,
		Long: short + `.

Takes the flags of 'docker compose ` + sub + `' and the project flags (-f, -p,
--profile, --env-file, --project-directory), and these of its own:
  -c, --config FILE   dso.yaml to use (default ./dso.yaml, then /etc/dso/dso.yaml)
      --dry-run       print the plan, values redacted, and change nothing

Every reference of every service is checked before anything is created: a
missing secret, an unknown provider or a malformed reference stops here.
With --wait, up also waits (--wait-timeout, else 60s) until every
container has received its secrets, and fails if one has not.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := &UpOptions{Factory: f, Args: args, Sub: sub}
			if runF != nil {
				return runF(opts)
			}
			return upRun(cmd, opts)
		},
	}
	return cmd
}

func upRun(cmd *cobra.Command, opts *UpOptions) error {
	ctx := cmd.Context()
	f := opts.Factory
	inv, err := split(opts.Args)
	if err != nil {
		return cmdutil.UsageError(cmd, err)
	}
	if inv.help {
		return cmd.Help()
	}
	if inv.config == "" {
		inv.config = f.ConfigPath
	}
	cfg, cfgPath, err := LoadConfig(inv.config)
	if err != nil {
		return err
	}
	p, err := loadProject(ctx, inv)
	if err != nil {
		return err
	}
	uses, err := compose.FindUses(p, p.ServiceNames(), LabelSecrets(cfg))
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitSecret, inFiles(p, fmt.Errorf("project %q:\n%w", p.Name, err)))
	}
	if len(uses) == 0 && inv.dryRun {
		// A dry run changes nothing: compose is not run at all, even on a
		// project with nothing to wire.
		fmt.Fprintf(f.IO.Out, "Project %s (%s): no service takes secrets; nothing to wire.\n\nWithout --dry-run, docker compose would be asked, with no override:\n  docker %s\n",
			p.Name, strings.Join(p.ComposeFiles, ", "), commandLine(composeArgs(p, inv, false, append([]string{opts.Sub}, inv.rest...)...)))
		return nil
	}
	if len(uses) == 0 {
		fmt.Fprintf(f.IO.ErrOut, "dso: no service of project %q takes secrets; running docker compose %s as it is\n", p.Name, opts.Sub)
		return dockerCompose(ctx, f, p, inv, nil, append([]string{opts.Sub}, inv.rest...)...)
	}
	set, err := resolve.Default().Build(cfg)
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitConfig, err)
	}
	defer set.Close()
	versions, err := Check(ctx, set, uses)
	if err != nil {
		return err
	}
	docker, err := f.Docker()
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	if !inv.dryRun {
		if err := ensureImages(ctx, f, docker, p, inv, uses); err != nil {
			return err
		}
		// With --build, every image was just built: compose need not build
		// them again (a second build would leave the first one dangling).
		inv.rest = slices.DeleteFunc(inv.rest, func(a string) bool { return a == "--build" })
	}
	initBin, err := InitBinary()
	if err != nil {
		return err
	}
	serving, err := agentctl.Serving(cfg)
	if err != nil {
		return err
	}
	strategy, err := strategies(p, uses, cfg)
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitConfig, inFiles(p, err))
	}
	wiring := compose.Wiring{InitBinary: initBin, Agent: serving.ID, BindHostPorts: bindsHostPorts(ctx, cfg, serving, docker)}
	if opts.Sub != "run" {
		// A one-off container (run) is not rotated: it keeps its ports
		// (--service-ports) and gets no proxy.
		wiring.Strategy = func(svc types.ServiceConfig) config.Strategy { return strategy[svc.Name] }
	}
	plan, err := compose.NewPlan(ctx, p, uses, wiring, EngineImages(docker, p))
	if err != nil {
		err = inFiles(p, err)
		if inv.dryRun {
			err = fmt.Errorf("%w\n(--dry-run neither builds nor pulls: run `docker dso pull` or `docker dso compose build` first)", err)
		}
		return cmdutil.WithExitCode(cmdutil.ExitConfig, err)
	}
	override, err := plan.Override()
	if err != nil {
		return err
	}
	if inv.dryRun {
		return printPlan(f.IO.Out, p, plan, versions, override)
	}
	if err := prepareProxies(ctx, docker, p, plan); err != nil {
		return err
	}
	if err := agentctl.EnsureLocal(ctx, clock.RealClock{}, cfg, cfgPath, f.IO.ErrOut); err != nil {
		return err
	}
	reg := registration{cfg: cfg, project: p.Name, config: cfgPath, docker: docker}
	if err := runRegistered(ctx, opts.Sub, inv.rest, reg, func(args ...string) error {
		return dockerCompose(ctx, f, p, inv, override, args...)
	}); err != nil {
		return err
	}
	if opts.Sub == "up" && slices.Contains(inv.rest, "--wait") {
		return waitDelivered(ctx, clock.RealClock{}, docker, cfg, p.Name, waitTimeout(inv.rest))
	}
	return nil
}

// waitTimeout is compose's --wait-timeout (seconds), else 60s.
func waitTimeout(args []string) time.Duration {
	for i, a := range args {
		v, ok := strings.CutPrefix(a, "--wait-timeout=")
		if !ok && a == "--wait-timeout" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if n, err := strconv.Atoi(v); ok && err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return 60 * time.Second
}

// waitDelivered waits, with --wait, until the agent has delivered to every
// running wired container of the project, so that the exit code says the
// applications have their secrets, not only that the containers run.
func waitDelivered(ctx context.Context, clk clock.Clock, docker client.APIClient, cfg *config.Config, project string, timeout time.Duration) error {
	c, err := agentctl.Dial(cfg)
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project, compose.LabelManaged+"=true").Add("status", "running")
	deadline := clk.Now().Add(timeout)
	for {
		list, err := docker.ContainerList(ctx, client.ContainerListOptions{Filters: f})
		if err != nil {
			return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
		}
		st, err := c.Status(ctx)
		if err != nil {
			return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
		}
		held := map[string]bool{}
		for _, h := range st.Containers {
			held[h.ID] = true
		}
		var missing []string
		for _, ct := range list.Items {
			if !held[ct.ID[:min(12, len(ct.ID))]] {
				missing = append(missing, strings.TrimPrefix(strings.Join(ct.Names, ","), "/"))
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if clk.Now().After(deadline) {
			return cmdutil.WithExitCode(cmdutil.ExitBackend, fmt.Errorf("not delivered within %s: %s have not received their secrets (see `docker dso watch` and the agent's log)", timeout, strings.Join(missing, ", ")))
		}
		if err := clock.Sleep(ctx, clk, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// LabelSecrets gives the label form (dso.secrets, targets.containers) its
// dso.yaml secrets (the example projects' test uses it too).
func LabelSecrets(cfg *config.Config) compose.Secrets {
	if cfg == nil {
		return compose.Secrets{}
	}
	return compose.Secrets{
		Lookup: func(name string) (compose.LabelSecret, bool) {
			for _, s := range cfg.Secrets {
				if s.Name == name {
					ls := compose.LabelSecret{Provider: s.Provider, File: s.Inject.Type == config.InjectFile, Mappings: s.Mappings}
					if ls.File {
						ls.Perm = s.Inject.Perm()
					}
					return ls, true
				}
			}
			return compose.LabelSecret{}, false
		},
		Targeting: func(service, containerName string) []string {
			var names []string
			for _, s := range cfg.Secrets {
				if slices.Contains(s.Targets.Containers, service) || containerName != "" && slices.Contains(s.Targets.Containers, containerName) {
					names = append(names, s.Name)
				}
			}
			return names
		},
	}
}

// Check resolves every reference once, so that a missing secret, a wrong
// key or an unreachable backend stops `up` (or `stack deploy`) before
// anything is created. The
// values are dropped at once; only versions are kept, for the plan.
func Check(ctx context.Context, set *resolve.Set, uses []compose.Use) (map[secretref.Ref]string, error) {
	refs := make([]secretref.Ref, 0, len(uses))
	for _, u := range uses {
		refs = append(refs, u.Ref)
	}
	got, err := set.Fetch(ctx, refs)
	var failed resolve.Errors
	if errors.As(err, &failed) {
		// Name each use of a reference that failed, with the fix.
		var errs []error
		for _, u := range uses {
			if e := failed[u.Ref]; e != nil {
				errs = append(errs, fmt.Errorf("service %q, variable %s (%s): %w%s", u.Service, u.Var, u.Origin, e, fix(set, u.Ref, e)))
			}
		}
		return nil, errors.Join(errs...)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, v := range got {
			clear(v.Value)
		}
	}()
	if err := checkPayloads(uses, got); err != nil {
		return nil, cmdutil.WithExitCode(cmdutil.ExitSecret, err)
	}
	versions := map[secretref.Ref]string{}
	for r, v := range got {
		versions[r] = v.Version
	}
	return versions, nil
}

// checkPayloads builds, for each service, the payload the agent would
// deliver to its containers and applies delivery's own checks (variable
// names, NUL bytes in env values, size), so that `up` refuses what the
// agent could not deliver instead of creating containers that wait for it.
func checkPayloads(uses []compose.Use, got map[secretref.Ref]resolve.Resolved) error {
	values := map[string][]deliver.Value{}
	for _, u := range uses {
		values[u.Service] = append(values[u.Service], deliver.Value{Var: u.Var, File: u.Ref.File, Perm: u.Ref.Perm, Data: got[u.Ref].Value})
	}
	var errs []error
	for _, svc := range slices.Sorted(maps.Keys(values)) {
		if err := deliver.Check(deliver.NewPayload(values[svc], "")); err != nil {
			errs = append(errs, fmt.Errorf("service %q cannot take its secrets:\n%w", svc, err))
		}
	}
	return errors.Join(errs...)
}

// fix suggests the command that repairs a missing secret of the local vault.
func fix(set *resolve.Set, ref secretref.Ref, err error) string {
	_, name, perr := set.Provider(ref)
	if perr != nil || !errors.Is(err, provider.ErrNotFound) || set.Type(name) != config.ProviderLocal || ref.Key != "" {
		return ""
	}
	return fmt.Sprintf("\n    fix: docker dso secret set %s", ref.Path)
}

// imageName is the image compose runs for svc.
func imageName(p *types.Project, svc types.ServiceConfig) string {
	if svc.Image != "" {
		return svc.Image
	}
	return p.Name + "-" + svc.Name
}

// ensureImages builds or pulls, through compose, the images of wired
// services that are not there yet, so that their entrypoint and command can
// be read. With --build it builds every image of the project, as
// `docker compose up --build` would.
func ensureImages(ctx context.Context, f *cmdutil.Factory, docker client.APIClient, p *types.Project, inv invocation, uses []compose.Use) error {
	if slices.Contains(inv.rest, "--build") {
		return dockerCompose(ctx, f, p, inv, nil, "build")
	}
	var build, pull []string
	for _, name := range compose.Services(uses) {
		svc, err := p.GetService(name)
		if err != nil {
			return err
		}
		if svc.Entrypoint != nil {
			continue
		}
		_, err = docker.ImageInspect(ctx, imageName(p, svc))
		switch {
		case svc.Build != nil && err != nil:
			build = append(build, svc.Name)
		case err != nil:
			pull = append(pull, svc.Name)
		}
	}
	if len(build) > 0 {
		if err := dockerCompose(ctx, f, p, inv, nil, append([]string{"build"}, build...)...); err != nil {
			return err
		}
	}
	if len(pull) > 0 {
		if err := dockerCompose(ctx, f, p, inv, nil, append([]string{"pull"}, pull...)...); err != nil {
			return err
		}
	}
	return nil
}

// InitBinary finds dso-init: $DSO_INIT, else beside this executable, else
// in the system plugin directories.
func InitBinary() (string, error) {
	if p := os.Getenv("DSO_INIT"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if st, err := os.Stat(abs); err != nil || !st.Mode().IsRegular() {
			return "", fmt.Errorf("DSO_INIT names %s, which is not a file", abs)
		}
		return abs, nil
	}
	var tried []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			tried = append(tried, filepath.Join(filepath.Dir(real), "dso-init"))
		}
	}
	tried = append(tried, "/usr/local/lib/docker/cli-plugins/dso-init", "/usr/libexec/docker/cli-plugins/dso-init", "/usr/lib/docker/cli-plugins/dso-init")
	for _, p := range tried {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("dso-init not found (looked in %s); reinstall with scripts/install.sh", strings.Join(tried, ", "))
}

// printPlan shows what `up` would do, without any value.
func printPlan(out io.Writer, p *types.Project, plan *compose.Plan, versions map[secretref.Ref]string, override []byte) error {
	fmt.Fprintf(out, "Project %s (%s)\n", p.Name, strings.Join(p.ComposeFiles, ", "))
	for _, sp := range plan.Services {
		fmt.Fprintf(out, "\nservice %s: runs %s\n", sp.Name, strings.Join(append(append([]string{initproc.InitPath, "--"}, sp.Entrypoint...), sp.Command...), " "))
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		for _, u := range sp.Uses {
			how := "env"
			if u.Ref.File {
				how = "file " + deliver.FilePath(u.Var)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\tversion %s\tvalue <redacted>\n", u.Var, how, u.Ref, versions[u.Ref])
		}
		tw.Flush()
	}
	fmt.Fprintf(out, "\nCompose override (read from stdin by docker compose; holds no value):\n%s\n", override)
	return nil
}

// bindsHostPorts says whether the agent that serves the project binds the
// proxies' host ports itself and hands them over (compose.Wiring), rather
// than Docker publishing them. It needs the powers of root on the engine's
// host: to bind any port, and to reach a proxy's control socket, whose
// process runs as nobody, through /proc. Root's local agent with a local
// engine has them (it may not run yet: it starts after the plan). The
// system agent is asked: under dso-agent.service it has them when it
// stands in the engine's network and PID namespaces (agent.hostPortsHere);
// when it cannot be asked, Docker publishes, which works everywhere.
func bindsHostPorts(ctx context.Context, cfg *config.Config, serving agentctl.Where, docker client.APIClient) bool {
	if serving.Kind == agentctl.Local {
		return os.Geteuid() == 0 && strings.HasPrefix(docker.DaemonHost(), "unix://")
	}
	c, err := agentctl.Dial(cfg)
	if err != nil {
		return false
	}
	st, err := c.Status(ctx)
	return err == nil && st.BindsHostPorts
}
