package cli

import (
	"github.com/spf13/cobra"
)

// NewRootCmd returns the `dso` command with every subcommand that works.
func NewRootCmd(f *Factory) *cobra.Command {
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
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError(c, err)
	})
	root.AddCommand(
		NewCmdVersion(f, nil),
	)
	return root
}
