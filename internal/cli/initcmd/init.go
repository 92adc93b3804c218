// Package initcmd implements `docker dso init`: it creates the local vault
// (~/.dso/vault.enc) and its key file (~/.dso/master.key), or a vault
// protected by a passphrase.
package initcmd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/provider/local"
	"github.com/dso-project/dso/internal/vaultfile"
)

// Options are the inputs of `docker dso init`.
type Options struct {
	Factory    *cmdutil.Factory
	Passphrase bool
	VaultFile  string
	KeyFile    string
	// Getenv looks up environment variables (os.Getenv outside tests).
	Getenv func(string) string
}

// NewCmd returns `docker dso init`. runF, when set, replaces the behaviour.
func NewCmd(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{Factory: f, Getenv: os.Getenv}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the local encrypted vault and its key",
		Long: `Create the local vault: an encrypted file (default ~/.dso/vault.enc) and a
random key in a file only you can read (default ~/.dso/master.key). With
--passphrase the key is derived from a passphrase instead (asked on the
terminal, or taken from DSO_PASSPHRASE) and no key file is written.

An existing vault is never replaced. When DSO_MASTER_KEY is set, the vault is
created with that key and no key file is written; an existing key file is
reused. Paths can also be set with DSO_VAULT_FILE and DSO_MASTER_KEY_FILE.`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return run(opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Passphrase, "passphrase", false, "Protect the vault with a passphrase instead of a key file")
	cmd.Flags().StringVar(&opts.VaultFile, "vault-file", "", "Path of the vault (default $DSO_VAULT_FILE, else ~/.dso/vault.enc)")
	cmd.Flags().StringVar(&opts.KeyFile, "key-file", "", "Path of the key file (default $DSO_MASTER_KEY_FILE, else ~/.dso/master.key)")
	return cmd
}

func run(opts *Options) error {
	ios := opts.Factory.IO
	paths, err := local.ResolvePaths(opts.VaultFile, opts.KeyFile, opts.Getenv)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(paths.Vault); err == nil {
		return fmt.Errorf("vault %s: %w; nothing changed (move it away first to start over: its secrets cannot be read without its key)", paths.Vault, vaultfile.ErrExists)
	}
	src := local.KeySource{KeyFile: paths.KeyFile, Getenv: opts.Getenv}
	if fd, ok := ios.StdinFd(); ok && ios.IsStdinTTY() {
		src.Prompt = local.TerminalPrompt(fd, ios.ErrOut)
	}

	var key vaultfile.Key
	var note string
	createdKeyFile := false
	switch {
	case opts.Passphrase:
		key, err = src.Passphrase(paths.Vault, true)
		note = "protected by a passphrase; keep it safe: the vault cannot be opened without it"
	case opts.Getenv(local.EnvMasterKey) != "":
		key, err = src.RawKey()
		note = "key from " + local.EnvMasterKey + " (no key file written); keep that key safe"
	default:
		key, createdKeyFile, err = keyFile(paths.KeyFile)
		note = "new key in " + paths.KeyFile + "; back it up: the vault cannot be opened without it"
		if !createdKeyFile {
			note = "existing key in " + paths.KeyFile + " reused"
		}
	}
	if err != nil {
		return err
	}
	if err = os.MkdirAll(filepath.Dir(paths.Vault), 0o700); err != nil {
		err = fmt.Errorf("create the vault directory: %w", err)
	} else {
		err = vaultfile.Create(paths.Vault, key)
	}
	if err != nil {
		if createdKeyFile {
			os.Remove(paths.KeyFile)
		}
		return err
	}
	fmt.Fprintf(ios.ErrOut, "Created vault %s (%s).\nNext: docker dso secret set app/db_password\n", paths.Vault, note)
	return nil
}

// keyFile returns the key in path, creating the file with a new random key
// when there is none (created reports that).
func keyFile(path string) (key vaultfile.Key, created bool, err error) {
	if _, err := os.Lstat(path); err == nil {
		key, err := vaultfile.ReadKeyFile(path)
		return key, false, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return vaultfile.Key{}, false, fmt.Errorf("key file %s: %w", path, err)
	}
	raw, err := vaultfile.GenerateKey()
	if err != nil {
		return vaultfile.Key{}, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return vaultfile.Key{}, false, fmt.Errorf("create the key file directory: %w", err)
	}
	if err := vaultfile.WriteKeyFile(path, raw); err != nil {
		return vaultfile.Key{}, false, err
	}
	key, err = vaultfile.RawKey(raw, "key file "+path)
	return key, true, err
}
