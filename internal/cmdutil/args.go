package cmdutil

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes scripts can rely on. They are documented in the README; the
// mapping from errors to codes lives in internal/cli.
const (
	ExitOK      = 0
	ExitFailure = 1 // anything not listed below
	ExitUsage   = 2 // unknown command or flag, wrong arguments
	ExitConfig  = 3 // dso.yaml or the compose project is invalid
	ExitSecret  = 4 // a reference is malformed or names a missing secret
	ExitVault   = 5 // the local vault cannot be opened: wrong key, corrupted, missing
	ExitBackend = 6 // a provider or the Docker engine cannot be reached
)

// ExitError carries an exit code chosen by a command itself.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// WithExitCode marks err to end the process with code.
func WithExitCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: code, Err: err}
}

// ErrSilent ends the process with ExitFailure without printing anything more:
// the command has already said what went wrong.
var ErrSilent = errors.New("silent error")

// UsageError wraps err as a usage mistake of cmd.
func UsageError(cmd *cobra.Command, err error) error {
	return WithExitCode(ExitUsage, fmt.Errorf("%w\nSee '%s --help'.", err, cmd.CommandPath()))
}

// NoArgs rejects positional arguments with a usage error.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return UsageError(cmd, fmt.Errorf("%q takes no arguments, got %q", cmd.CommandPath(), strings.Join(args, " ")))
	}
	return nil
}

// ExactArgs requires len(names) positional arguments, named in the error.
func ExactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return UsageError(cmd, fmt.Errorf("%q needs %d argument(s) (%s), got %d", cmd.CommandPath(), len(names), strings.Join(names, ", "), len(args)))
		}
		return nil
	}
}
