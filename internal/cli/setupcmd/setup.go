// Package setupcmd implements `docker dso setup`: it writes a starter
// dso.yaml for the chosen mode. Only local mode is supported so far.
package setupcmd

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cmdutil"
)

// localConfig is the starter dso.yaml of local mode.
const localConfig = `# DSO configuration (local mode): secrets come from the encrypted vault that
# ` + "`docker dso init`" + ` creates. Store one with: docker dso secret set app/db_password
# and refer to it in docker-compose.yaml as dso://app/db_password.
version: v1.0.0
mode: local

providers:
  local:
    type: local
    vault_file: ~/.dso/vault.enc
    master_key_file: ~/.dso/master.key

secrets: []
`

// Options are the inputs of `docker dso setup`.
type Options struct {
	Factory        *cmdutil.Factory
	Mode           string
	NonInteractive bool
	Force          bool
}

// NewCmd returns `docker dso setup`. runF, when set, replaces the behaviour.
func NewCmd(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{Factory: f}
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Write a starter dso.yaml",
		Long: `Write a starter dso.yaml in the current directory (or at --config) for the
chosen mode. An existing file is kept unless --force is given. On a terminal
the command asks for confirmation first, unless --non-interactive is given.
Only local mode is supported so far.`,
		Example: `  docker dso setup --mode local
  docker dso setup --mode local --non-interactive`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Mode != "local" {
				return cmdutil.UsageError(cmd, fmt.Errorf("--mode %q is not supported yet: only --mode local is", opts.Mode))
			}
			if runF != nil {
				return runF(opts)
			}
			return run(opts)
		},
	}
	cmd.Flags().StringVar(&opts.Mode, "mode", "local", "Mode to set up (only local is supported so far)")
	cmd.Flags().BoolVar(&opts.NonInteractive, "non-interactive", false, "Never ask for confirmation")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "Overwrite an existing dso.yaml")
	return cmd
}

func run(opts *Options) error {
	ios := opts.Factory.IO
	path := opts.Factory.ConfigPath
	if path == "" {
		path = "dso.yaml"
	}
	_, statErr := os.Lstat(path)
	exists := statErr == nil
	if exists && !opts.Force {
		return fmt.Errorf("%s already exists; nothing changed (use --force to overwrite it)", path)
	}
	if !opts.NonInteractive && ios.IsStdinTTY() {
		question := fmt.Sprintf("Write a local-mode configuration to %s? [Y/n] ", path)
		if exists {
			question = fmt.Sprintf("Overwrite %s with a local-mode configuration? [y/N] ", path)
		}
		fmt.Fprint(ios.ErrOut, question)
		answer, _ := bufio.NewReader(ios.In).ReadString('\n')
		answer = strings.ToLower(strings.TrimSpace(answer))
		if answer == "n" || answer == "no" || (exists && answer != "y" && answer != "yes") {
			fmt.Fprintln(ios.ErrOut, "Nothing written.")
			return cmdutil.ErrSilent
		}
	}
	if err := write(path, []byte(localConfig), opts.Force); err != nil {
		return err
	}
	fmt.Fprintf(ios.ErrOut, "Wrote %s (local mode).\nNext: docker dso init, then docker dso secret set app/db_password\n", path)
	return nil
}

// write creates path with data; with overwrite it atomically replaces an
// existing file, else it refuses to (a file created meanwhile is kept).
func write(path string, data []byte, overwrite bool) (err error) {
	if !overwrite {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; nothing changed (use --force to overwrite it)", path)
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
