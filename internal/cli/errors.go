package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/iostreams"
)

// Exit codes scripts can rely on. They are documented in the README.
const (
	ExitOK      = 0
	ExitError   = 1 // anything not listed below
	ExitUsage   = 2 // unknown command or flag, wrong arguments
	ExitConfig  = 3 // dso.yaml or the compose project is invalid
	ExitSecret  = 4 // a reference is malformed or names a missing secret
	ExitVault   = 5 // the local vault cannot be opened: wrong key, corrupted, missing
	ExitBackend = 6 // a provider or the Docker engine cannot be reached
)

// exitError carries an exit code chosen by the command itself.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withExitCode marks err to end the process with code.
func withExitCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// errSilent ends the process with ExitError without printing anything more:
// the command has already said what went wrong.
var errSilent = errors.New("silent error")

func usageError(c *cobra.Command, err error) error {
	return withExitCode(ExitUsage, fmt.Errorf("%w\nSee '%s --help'.", err, c.CommandPath()))
}

// exitRules maps typed errors from the packages below to exit codes. It is
// the one place where that mapping lives.
var exitRules []struct {
	target error
	code   int
}

// ExitCode prints err (if any) and returns the process exit code for it.
func ExitCode(ios *iostreams.IOStreams, err error) int {
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, errSilent) {
		return ExitError
	}
	fmt.Fprintln(ios.ErrOut, "Error:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	for _, r := range exitRules {
		if errors.Is(err, r.target) {
			return r.code
		}
	}
	if isCobraUsageError(err) {
		return ExitUsage
	}
	return ExitError
}
