package systemcmd

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/systemd"
)

// newUnitCmd returns `docker dso system unit`: the dso-agent.service that
// `bootstrap agent` writes, printed for packagers and configuration
// management (scripts/package.sh ships it from here, so the packaged unit
// and the bootstrapped one are the same text).
func newUnitCmd(f *cmdutil.Factory) *cobra.Command {
	var binary string
	cmd := &cobra.Command{
		Use:     "unit",
		Short:   "Print the dso-agent.service unit that bootstrap installs",
		Example: "  docker dso system unit --binary /usr/libexec/docker/cli-plugins/docker-dso",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if binary == "" {
				var err error
				if binary, err = systemd.Executable(); err != nil {
					return err
				}
			} else if !filepath.IsAbs(binary) {
				return cmdutil.UsageError(cmd, fmt.Errorf("--binary %q: the unit's ExecStart needs an absolute path", binary))
			}
			_, err := fmt.Fprint(f.IO.Out, systemd.Unit(binary))
			return err
		},
	}
	cmd.Flags().StringVar(&binary, "binary", "", "docker-dso path for ExecStart (default: this binary)")
	return cmd
}
