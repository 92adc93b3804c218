package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/buildinfo"
)

// VersionOptions are the inputs of `docker dso version`.
type VersionOptions struct {
	Factory *Factory
	JSON    bool
}

// NewCmdVersion returns `docker dso version`. runF replaces the behaviour in
// tests of flag parsing.
func NewCmdVersion(f *Factory, runF func(*VersionOptions) error) *cobra.Command {
	opts := &VersionOptions{Factory: f}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return versionRun(opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print as JSON")
	return cmd
}

func versionRun(opts *VersionOptions) error {
	out := opts.Factory.IO.Out
	if opts.JSON {
		return json.NewEncoder(out).Encode(map[string]string{
			"version": buildinfo.Version,
			"commit":  buildinfo.Commit,
			"go":      buildinfo.GoVersion(),
		})
	}
	_, err := fmt.Fprintf(out, "dso version %s\ncommit: %s\ngo: %s\n", buildinfo.Version, buildinfo.Commit, buildinfo.GoVersion())
	return err
}
