// Package secretcmd implements `docker dso secret set|get|list|rm`, which
// manage the secrets of the local encrypted vault. Values travel only through
// stdin and stdout (or a hidden prompt), never through arguments.
package secretcmd

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/iostreams"
	"github.com/dso-project/dso/internal/provider/local"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/vaultfile"
)

// VaultOptions locate the vault and its key; every secret command has them.
type VaultOptions struct {
	VaultFile string
	KeyFile   string
	// Getenv looks up environment variables (os.Getenv outside tests).
	Getenv func(string) string
}

// NewCmd returns the `docker dso secret` command group.
func NewCmd(f *cmdutil.Factory) *cobra.Command {
	vault := &VaultOptions{Getenv: os.Getenv}
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage the secrets of the local vault",
		Long: `Manage the secrets of the local vault created by ` + "`docker dso init`" + `.
Names have the form project/path, as in dso://project/path.

The key comes from DSO_MASTER_KEY, else the key file; a passphrase vault takes
DSO_PASSPHRASE or asks on the terminal. Paths can also be set with
DSO_VAULT_FILE and DSO_MASTER_KEY_FILE.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return cmdutil.UsageError(cmd, fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath()))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	cmd.PersistentFlags().StringVar(&vault.VaultFile, "vault-file", "", "Path of the vault (default $DSO_VAULT_FILE, else ~/.dso/vault.enc)")
	cmd.PersistentFlags().StringVar(&vault.KeyFile, "key-file", "", "Path of the key file (default $DSO_MASTER_KEY_FILE, else ~/.dso/master.key)")
	cmd.AddCommand(
		NewSetCmd(f, vault, nil),
		NewGetCmd(f, vault, nil),
		NewListCmd(f, vault, nil),
		NewRmCmd(f, vault, nil),
	)
	return cmd
}

// open finds the vault and loads its key, of the kind the vault needs.
func (o *VaultOptions) open(ios *iostreams.IOStreams) (string, vaultfile.Key, error) {
	paths, err := local.ResolvePaths(o.VaultFile, o.KeyFile, o.Getenv)
	if err != nil {
		return "", vaultfile.Key{}, err
	}
	src := local.KeySource{KeyFile: paths.KeyFile, Getenv: o.Getenv}
	if fd, ok := ios.StdinFd(); ok && ios.IsStdinTTY() {
		src.Prompt = local.TerminalPrompt(fd, ios.ErrOut)
	}
	key, err := src.Load(paths.Vault)
	return paths.Vault, key, hint(err)
}

// hint adds what to do next to errors a user can act on.
func hint(err error) error {
	if errors.Is(err, vaultfile.ErrNotExist) {
		return fmt.Errorf("%w (create it with: docker dso init)", err)
	}
	return err
}

// checkName validates a secret name given as an argument.
func checkName(name string) error {
	if err := secretref.ValidateName(name); err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitSecret, err)
	}
	return nil
}
