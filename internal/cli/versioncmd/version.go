// Package versioncmd implements `docker dso version`.
package versioncmd

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/buildinfo"
	"github.com/dso-project/dso/internal/cmdutil"
)

// Options are the inputs of `docker dso version`.
type Options struct {
	Factory *cmdutil.Factory
	JSON    bool
}

// NewCmd returns `docker dso version`. runF, when set, replaces the behaviour
// (tests of flag parsing use it).
func NewCmd(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{Factory: f}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return run(opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print as JSON")
	return cmd
}

func run(opts *Options) error {
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
