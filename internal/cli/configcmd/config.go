// Package configcmd implements `docker dso config validate` and
// `docker dso config show`: checking dso.yaml and printing the configuration
// in effect, with secrets redacted.
package configcmd

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/config"
)

// Actions of the config command group.
const (
	ActionValidate = "validate"
	ActionShow     = "show"
)

// Options are the inputs of `docker dso config validate|show`.
type Options struct {
	Factory *cmdutil.Factory
	Action  string // ActionValidate or ActionShow
	JSON    bool   // show: print JSON
}

// NewCmd returns `docker dso config` with its subcommands. runF, when set,
// replaces the behaviour (tests of flag parsing use it).
func NewCmd(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{Factory: f}
	run := func(action string) func(*cobra.Command, []string) error {
		return func(*cobra.Command, []string) error {
			opts.Action = action
			if runF != nil {
				return runF(opts)
			}
			return runAction(opts)
		}
	}
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check dso.yaml and show the configuration in effect",
		Long: "The configuration is read from -c/--config, else ./dso.yaml, else /etc/dso/dso.yaml. " +
			"${VAR} and ${VAR:-default} are taken from the environment, and ~ at the start of a path is $HOME.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return cmdutil.UsageError(cmd, fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath()))
			}
			return cmd.Help()
		},
	}
	validate := &cobra.Command{
		Use:   "validate",
		Short: "Check dso.yaml and report every problem with file:line:column",
		Args:  cmdutil.NoArgs,
		RunE:  run(ActionValidate),
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the configuration in effect (defaults applied, ${VAR} expanded, secrets redacted)",
		Args:  cmdutil.NoArgs,
		RunE:  run(ActionShow),
	}
	show.Flags().BoolVar(&opts.JSON, "json", false, "Print as JSON")
	cmd.AddCommand(validate, show)
	return cmd
}

func runAction(opts *Options) error {
	cfg, err := config.Load(opts.Factory.ConfigPath)
	if err != nil {
		return err
	}
	out := opts.Factory.IO.Out
	if opts.Action == ActionValidate {
		_, err := fmt.Fprintf(out, "%s: valid\n", cfg.File)
		return err
	}
	shown := cfg.Redacted()
	if opts.JSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(struct {
			File   string         `json:"file"`
			Config *config.Config `json:"config"`
		}{cfg.File, shown})
	}
	if _, err := fmt.Fprintf(out, "# %s (defaults applied, secrets redacted)\n", cfg.File); err != nil {
		return err
	}
	enc := yaml.NewEncoder(out)
	enc.SetIndent(2)
	if err := enc.Encode(shown); err != nil {
		return err
	}
	return enc.Close()
}
