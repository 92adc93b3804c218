package secretcmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/vaultfile"
)

// RmOptions are the inputs of `docker dso secret rm`.
type RmOptions struct {
	Factory *cmdutil.Factory
	Vault   *VaultOptions
	Name    string
}

// NewRmCmd returns `docker dso secret rm NAME`. runF, when set, replaces the behaviour.
func NewRmCmd(f *cmdutil.Factory, vault *VaultOptions, runF func(*RmOptions) error) *cobra.Command {
	opts := &RmOptions{Factory: f, Vault: vault}
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove"},
		Short:   "Remove a secret from the vault",
		Args:    cmdutil.ExactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if runF != nil {
				return runF(opts)
			}
			return runRm(opts)
		},
	}
}

func runRm(opts *RmOptions) error {
	if err := checkName(opts.Name); err != nil {
		return err
	}
	path, key, err := opts.Vault.open(opts.Factory.IO)
	if err != nil {
		return err
	}
	err = vaultfile.Update(path, key, func(v *vaultfile.Vault) error {
		if !v.Delete(opts.Name) {
			return fmt.Errorf("secret %q: %w in vault %s; nothing removed", opts.Name, provider.ErrNotFound, path)
		}
		return nil
	})
	if err != nil {
		return hint(err)
	}
	fmt.Fprintf(opts.Factory.IO.ErrOut, "Removed %s from vault %s\n", opts.Name, path)
	return nil
}
