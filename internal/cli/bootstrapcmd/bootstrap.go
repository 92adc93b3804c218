// Package bootstrapcmd implements `docker dso bootstrap agent`: it installs
// the agent as a systemd service on this host (the dso group, /etc/dso with
// a starter dso.yaml, /run/dso, /var/lib/dso and dso-agent.service).
package bootstrapcmd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/systemd"
)

// Options are the inputs of `docker dso bootstrap agent`.
type Options struct {
	Factory        *cmdutil.Factory
	NonInteractive bool
	Provider       string
	// Root is where the install goes ("/" on a host; a directory for
	// packaging and tests).
	Root string
	// Binary is the docker-dso path written into the unit (this binary
	// when empty).
	Binary string
}

// NewCmd returns `docker dso bootstrap` with its `agent` subcommand. runF,
// when set, replaces the behaviour of `bootstrap agent`.
func NewCmd(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Install DSO on this host",
		Args:  cmdutil.NoArgs,
	}
	opts := &Options{Factory: f}
	agent := &cobra.Command{
		Use:   "agent",
		Short: "Install the agent as a systemd service (as root)",
		Long: `Install the agent as a systemd service: create the dso group, /etc/dso (0775 root:dso)
with a starter dso.yaml (0664 root:dso) for the chosen provider, /run/dso, /var/lib/dso,
and the hardened dso-agent.service, then enable it. Running it again keeps dso.yaml.`,
		Example: "  sudo docker dso bootstrap agent\n  sudo docker dso bootstrap agent --non-interactive --provider aws",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Provider != "" && !slices.Contains(systemd.Providers, opts.Provider) {
				return cmdutil.UsageError(cmd, fmt.Errorf("--provider %q: want one of %s", opts.Provider, strings.Join(systemd.Providers, ", ")))
			}
			if runF != nil {
				return runF(opts)
			}
			return run(cmd.Context(), opts)
		},
	}
	agent.Flags().BoolVar(&opts.NonInteractive, "non-interactive", false, "Ask nothing: take --provider, else the detected cloud")
	agent.Flags().StringVar(&opts.Provider, "provider", "", "Provider of the starter dso.yaml: aws, azure or vault (default: detected)")
	agent.Flags().StringVar(&opts.Root, "root", "/", "Install under this directory instead of / (for packaging)")
	agent.Flags().MarkHidden("root")
	cmd.AddCommand(agent)
	return cmd
}

func run(ctx context.Context, opts *Options) error {
	io := opts.Factory.IO
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Root == "/" && runtime.GOOS != "linux" {
		return fmt.Errorf("bootstrap agent installs a systemd service, which %s does not have: use local mode, where `docker dso up` starts a user agent", runtime.GOOS)
	}
	if opts.Root == "/" && os.Geteuid() != 0 {
		return errors.New("bootstrap agent changes system files and must run as root: sudo docker dso bootstrap agent")
	}
	provider, err := chooseProvider(opts)
	if err != nil {
		return err
	}
	binary := opts.Binary
	if binary == "" {
		if binary, err = systemd.Executable(); err != nil {
			return err
		}
	}
	steps, err := systemd.Bootstrap(ctx, systemd.BootstrapOptions{Root: opts.Root, Provider: provider, Binary: binary})
	for _, s := range steps {
		mark := "kept   "
		if s.Done {
			mark = "done   "
		}
		fmt.Fprintf(io.Out, "%s %s\n", mark, s.What)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(io.Out, "\nNext:")
	fmt.Fprintf(io.Out, "  edit %s (members of group %s may), then check it: docker dso config validate\n", systemd.ConfigFile, systemd.GroupName)
	if systemd.Running(opts.Root) {
		fmt.Fprintln(io.Out, "  start the agent: sudo systemctl start dso-agent")
	} else {
		fmt.Fprintln(io.Out, "  systemd is not running on this host: the unit is enabled for when it does; until then run the agent in the foreground with: docker dso agent")
	}
	fmt.Fprintf(io.Out, "  let a user in without sudo: sudo usermod -aG %s USER\n", systemd.GroupName)
	return nil
}

func chooseProvider(opts *Options) (string, error) {
	if opts.Provider != "" {
		return opts.Provider, nil
	}
	detected := detectProvider(opts.Root)
	io := opts.Factory.IO
	if opts.NonInteractive || !io.IsStdinTTY() {
		if detected == "" {
			return "", cmdutil.WithExitCode(cmdutil.ExitUsage, fmt.Errorf("no cloud detected on this host: pass --provider %s", strings.Join(systemd.Providers, "|")))
		}
		fmt.Fprintf(io.Out, "provider: %s (detected)\n", detected)
		return detected, nil
	}
	in := bufio.NewReader(io.In)
	for {
		if detected != "" {
			fmt.Fprintf(io.Out, "Provider (%s) [%s]: ", strings.Join(systemd.Providers, ", "), detected)
		} else {
			fmt.Fprintf(io.Out, "Provider (%s): ", strings.Join(systemd.Providers, ", "))
		}
		line, err := in.ReadString('\n')
		answer := strings.TrimSpace(line)
		if answer == "" {
			answer = detected
		}
		if slices.Contains(systemd.Providers, answer) {
			return answer, nil
		}
		if err != nil {
			return "", fmt.Errorf("no provider chosen: pass --provider %s", strings.Join(systemd.Providers, "|"))
		}
		fmt.Fprintf(io.ErrOut, "%q is not one of %s\n", answer, strings.Join(systemd.Providers, ", "))
	}
}

// detectProvider recognises AWS and Azure machines from their firmware
// data, and a Vault client setup from VAULT_ADDR.
func detectProvider(root string) string {
	read := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(root, p))
		return strings.TrimSpace(string(b))
	}
	switch {
	case strings.Contains(read("/sys/class/dmi/id/board_vendor"), "Amazon"),
		strings.HasPrefix(strings.ToLower(read("/sys/hypervisor/uuid")), "ec2"):
		return "aws"
	case read("/sys/class/dmi/id/chassis_asset_tag") == "7783-7084-3265-9085-8269-3286-77":
		return "azure"
	case os.Getenv("VAULT_ADDR") != "":
		return "vault"
	}
	return ""
}
