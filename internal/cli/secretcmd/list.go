package secretcmd

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/vaultfile"
)

// ListOptions are the inputs of `docker dso secret list`.
type ListOptions struct {
	Factory *cmdutil.Factory
	Vault   *VaultOptions
	JSON    bool
}

// NewListCmd returns `docker dso secret list`. runF, when set, replaces the behaviour.
func NewListCmd(f *cmdutil.Factory, vault *VaultOptions, runF func(*ListOptions) error) *cobra.Command {
	opts := &ListOptions{Factory: f, Vault: vault}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List secret names, versions and update times (never values)",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return runList(opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print a JSON array of {name, version, updated}")
	return cmd
}

func runList(opts *ListOptions) error {
	ios := opts.Factory.IO
	path, key, err := opts.Vault.open(ios)
	if err != nil {
		return err
	}
	v, err := vaultfile.Open(path, key)
	if err != nil {
		return hint(err)
	}
	list := v.List()
	if opts.JSON {
		enc := json.NewEncoder(ios.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	if len(list) == 0 {
		fmt.Fprintf(ios.ErrOut, "No secrets in vault %s (add one with: docker dso secret set NAME)\n", path)
		return nil
	}
	w := tabwriter.NewWriter(ios.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tVERSION\tUPDATED")
	for _, m := range list {
		fmt.Fprintf(w, "%s\t%d\t%s\n", m.Name, m.Version, m.Updated.Format(time.RFC3339))
	}
	return w.Flush()
}
