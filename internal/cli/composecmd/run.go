// Package composecmd implements the commands that act on a Compose project:
// `docker dso up` (also `docker dso compose up`), `down`, and the other
// compose subcommands passed through to Docker Compose v2 (`ps`, `logs`,
// `stop`, `restart`, `pull`, ...). Compose loads and orchestrates the project
// itself; dso only adds a secret-free override for the services that take
// secrets and makes sure the agent that delivers them runs.
package composecmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
)

// dockerCompose runs `docker compose` with the global flags that make it see
// the project dso loaded, then args. override, when not nil, is read as an
// extra compose file from stdin.
func dockerCompose(ctx context.Context, f *cmdutil.Factory, p *types.Project, inv invocation, override []byte, args ...string) error {
	return RunDocker(ctx, f, override, composeArgs(p, inv, override != nil, args...)...)
}

// RunDocker runs the docker CLI with args, stdin from the user or, when not
// nil, from stdin, and passes on its exit code.
func RunDocker(ctx context.Context, f *cmdutil.Factory, stdin []byte, args ...string) error {
	docker, err := exec.LookPath("docker")
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, errors.New("the docker CLI is not on PATH"))
	}
	cmd := exec.CommandContext(ctx, docker, args...)
	cmd.Stdout, cmd.Stderr = f.IO.Out, f.IO.ErrOut
	cmd.Stdin = f.IO.In
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.Env = composeEnv(os.Environ())
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			// Docker has said what went wrong; pass its exit code on.
			return cmdutil.WithExitCode(ee.ExitCode(), cmdutil.ErrSilent)
		}
		return fmt.Errorf("run docker %s: %w", args[0], err)
	}
	return nil
}

// composeArgs is the argv (after `docker`) that runs compose on the project
// loaded as the user asked, with the override on stdin when withOverride.
func composeArgs(p *types.Project, inv invocation, withOverride bool, args ...string) []string {
	global := []string{"compose", "--project-name", p.Name, "--project-directory", p.WorkingDir}
	for _, file := range p.ComposeFiles {
		global = append(global, "--file", file)
	}
	if withOverride {
		global = append(global, "--file", "-")
	}
	for _, e := range inv.project.EnvFiles {
		global = append(global, "--env-file", e)
	}
	for _, pr := range inv.project.Profiles {
		global = append(global, "--profile", pr)
	}
	return append(global, args...)
}

// commandLine shows an argv as a shell would take it back.
func commandLine(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = a
		if a == "" || strings.ContainsFunc(a, func(r rune) bool { return !strings.ContainsRune(safeShellChars, r) }) {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

const safeShellChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:=@%+,"

// composeEnv is the environment of the compose process: the user's, less
// the key material of the local vault.
func composeEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, "DSO_MASTER_KEY=") || strings.HasPrefix(kv, "DSO_PASSPHRASE=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// LoadConfig reads dso.yaml: the -c file, else ./dso.yaml or
// /etc/dso/dso.yaml when one exists. With none, it returns nil: references
// then use the local vault at its default place.
func LoadConfig(explicit string) (*config.Config, string, error) {
	cfg, path, err := config.Find(explicit)
	if err != nil {
		return nil, "", cmdutil.WithExitCode(cmdutil.ExitConfig, err)
	}
	return cfg, path, nil
}

// loadProject loads the compose project named by the invocation.
func loadProject(ctx context.Context, inv invocation) (*types.Project, error) {
	p, err := compose.Load(ctx, inv.project)
	if err != nil {
		return nil, cmdutil.WithExitCode(cmdutil.ExitConfig, err)
	}
	return p, nil
}

// passthrough runs a compose subcommand that needs no wiring.
func passthrough(ctx context.Context, f *cmdutil.Factory, sub string, args []string) error {
	inv, err := split(args)
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitUsage, err)
	}
	if inv.help {
		inv.rest = append(inv.rest, "--help")
	}
	p, err := loadProject(ctx, inv)
	if err != nil {
		return err
	}
	var stubs []byte
	if seesProxies[sub] {
		stubs = proxyStubs(ctx, f, p.Name)
	}
	var anonymous []string
	if sub == "down" && removesVolumes(inv.rest) {
		anonymous = anonymousVolumes(ctx, f, p.Name)
	}
	if err := dockerCompose(ctx, f, p, inv, stubs, append([]string{sub}, inv.rest...)...); err != nil {
		return err
	}
	if err := removeVolumes(ctx, f, anonymous); err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	if sub == "ps" && !inv.help && !slices.ContainsFunc(inv.rest, otherFormat) {
		printBoundPorts(ctx, f, p.Name)
	}
	return nil
}

// otherFormat reports whether a flag of `ps` asks for something else than
// its table (JSON, IDs, service names), which nothing may follow.
func otherFormat(arg string) bool {
	name, _, _ := strings.Cut(arg, "=")
	switch name {
	case "--format", "-q", "--quiet", "--services", "--status", "--filter":
		return true
	}
	return strings.HasPrefix(arg, "-") && !strings.HasPrefix(arg, "--") && strings.ContainsAny(arg, "q")
}
