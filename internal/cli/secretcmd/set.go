package secretcmd

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/iostreams"
	"github.com/dso-project/dso/internal/vaultfile"
)

// SetOptions are the inputs of `docker dso secret set`.
type SetOptions struct {
	Factory *cmdutil.Factory
	Vault   *VaultOptions
	Name    string
}

// NewSetCmd returns `docker dso secret set NAME`. runF, when set, replaces the behaviour.
func NewSetCmd(f *cmdutil.Factory, vault *VaultOptions, runF func(*SetOptions) error) *cobra.Command {
	opts := &SetOptions{Factory: f, Vault: vault}
	return &cobra.Command{
		Use:   "set NAME",
		Short: "Store a secret read from stdin (or a hidden prompt)",
		Long: `Store the value of secret NAME in the vault. The value is read from stdin,
byte for byte (newlines and trailing spaces are kept; binary is fine, up to
1 MiB), or typed at a hidden prompt when stdin is a terminal. It is never taken
from the command line, where other users could see it.`,
		Example: `  docker dso secret set app/db_password
  printf '%s' "$TOKEN" | docker dso secret set app/api_token
  docker dso secret set app/tls_key < key.pem`,
		Args: cmdutil.ExactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if runF != nil {
				return runF(opts)
			}
			return runSet(opts)
		},
	}
}

func runSet(opts *SetOptions) error {
	ios := opts.Factory.IO
	if err := checkName(opts.Name); err != nil {
		return err
	}
	path, key, err := opts.Vault.open(ios)
	if err != nil {
		return err
	}
	// Check the key and the file before asking for the value.
	if _, err := vaultfile.Open(path, key); err != nil {
		return hint(err)
	}
	value, err := readValue(ios, opts.Name)
	if err != nil {
		return err
	}
	var version uint64
	err = vaultfile.Update(path, key, func(v *vaultfile.Vault) error {
		version, err = v.Set(opts.Name, value)
		return err
	})
	if err != nil {
		return hint(err)
	}
	fmt.Fprintf(ios.ErrOut, "Stored %s (version %d) in vault %s\n", opts.Name, version, path)
	return nil
}

// readValue reads the value from a hidden prompt on a terminal, else all of stdin.
func readValue(ios *iostreams.IOStreams, name string) ([]byte, error) {
	var value []byte
	if fd, ok := ios.StdinFd(); ok && ios.IsStdinTTY() {
		fmt.Fprintf(ios.ErrOut, "Value for %s (input hidden): ", name)
		v, err := term.ReadPassword(fd)
		fmt.Fprintln(ios.ErrOut)
		if err != nil {
			return nil, fmt.Errorf("secret %s: read the value from the terminal: %w", name, err)
		}
		value = v
	} else {
		v, err := io.ReadAll(io.LimitReader(ios.In, vaultfile.MaxValueSize+1))
		if err != nil {
			return nil, fmt.Errorf("secret %s: read the value from stdin: %w", name, err)
		}
		value = v
	}
	switch {
	case len(value) > vaultfile.MaxValueSize:
		return nil, fmt.Errorf("secret %s: %w: more than %d bytes (1 MiB) on stdin; nothing stored", name, vaultfile.ErrTooLarge, vaultfile.MaxValueSize)
	case len(value) == 0:
		return nil, errors.New("secret " + name + ": empty value; nothing stored (pipe the value to stdin, or run on a terminal to type it)")
	}
	return value, nil
}
