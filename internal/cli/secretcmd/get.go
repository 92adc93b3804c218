package secretcmd

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/local"
)

// GetOptions are the inputs of `docker dso secret get`.
type GetOptions struct {
	Factory *cmdutil.Factory
	Vault   *VaultOptions
	Name    string
}

// NewGetCmd returns `docker dso secret get NAME`. runF, when set, replaces the behaviour.
func NewGetCmd(f *cmdutil.Factory, vault *VaultOptions, runF func(*GetOptions) error) *cobra.Command {
	opts := &GetOptions{Factory: f, Vault: vault}
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Write a secret's value to stdout, exactly as stored",
		Args:  cmdutil.ExactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if runF != nil {
				return runF(opts)
			}
			return runGet(cmd.Context(), opts)
		},
	}
}

func runGet(ctx context.Context, opts *GetOptions) error {
	if err := checkName(opts.Name); err != nil {
		return err
	}
	path, key, err := opts.Vault.open(opts.Factory.IO)
	if err != nil {
		return err
	}
	s, err := local.New(path, key).Get(ctx, opts.Name)
	if errors.Is(err, provider.ErrNotFound) {
		return fmt.Errorf("%w (store it with: docker dso secret set %s)", err, opts.Name)
	}
	if err != nil {
		return hint(err)
	}
	_, err = opts.Factory.IO.Out.Write(s.Value)
	return err
}
