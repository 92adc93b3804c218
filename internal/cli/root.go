package cli

import (
	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cli/agentcmd"
	"github.com/dso-project/dso/internal/cli/bootstrapcmd"
	"github.com/dso-project/dso/internal/cli/composecmd"
	"github.com/dso-project/dso/internal/cli/configcmd"
	"github.com/dso-project/dso/internal/cli/doctorcmd"
	"github.com/dso-project/dso/internal/cli/initcmd"
	"github.com/dso-project/dso/internal/cli/secretcmd"
	"github.com/dso-project/dso/internal/cli/setupcmd"
	"github.com/dso-project/dso/internal/cli/stackcmd"
	"github.com/dso-project/dso/internal/cli/statuscmd"
	"github.com/dso-project/dso/internal/cli/systemcmd"
	"github.com/dso-project/dso/internal/cli/versioncmd"
	"github.com/dso-project/dso/internal/cmdutil"
)

// NewRootCmd returns the `dso` command with every subcommand that works.
// Each command lives in its own package under internal/cli.
func NewRootCmd(f *cmdutil.Factory) *cobra.Command {
	root := &cobra.Command{
		Use:           "dso",
		Short:         "Secrets for Docker Compose, delivered at run time",
		Long:          "DSO takes secrets from a backend and hands them to the containers of a Docker Compose project at run time, without writing them to disk or into the container configuration.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(f.IO.In)
	root.SetOut(f.IO.Out)
	root.SetErr(f.IO.ErrOut)
	root.SetFlagErrorFunc(cmdutil.UsageError)
	root.PersistentFlags().StringVarP(&f.ConfigPath, "config", "c", "", "Path to dso.yaml (default: ./dso.yaml, then /etc/dso/dso.yaml)")

	root.AddGroup(&cobra.Group{ID: composecmd.GroupID, Title: "Compose commands (the project loaded as docker compose loads it):"})
	root.AddCommand(composecmd.Commands(f)...)
	root.AddCommand(
		versioncmd.NewCmd(f, nil),
		configcmd.NewCmd(f, nil),
		setupcmd.NewCmd(f, nil),
		initcmd.NewCmd(f, nil),
		secretcmd.NewCmd(f),
		agentcmd.NewCmd(f, nil),
		statuscmd.NewCmd(f, nil),
		statuscmd.NewCmdWatch(f),
		bootstrapcmd.NewCmd(f, nil),
		systemcmd.NewCmd(f, nil),
		doctorcmd.NewCmd(f, nil),
		stackcmd.NewCmd(f),
	)
	return root
}
