package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/iostreams"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/vaultfile"
)

// exitRules maps typed errors from the packages below to exit codes. It is
// the one place where that mapping lives; commands may also choose a code
// themselves with cmdutil.WithExitCode.
func exitRules() []struct {
	target error
	code   int
} {
	return []struct {
		target error
		code   int
	}{
		{config.ErrInvalid, cmdutil.ExitConfig},
		{config.ErrNoFile, cmdutil.ExitConfig},
		{provider.ErrNotFound, cmdutil.ExitSecret},
		{provider.ErrDenied, cmdutil.ExitBackend},
		{provider.ErrUnreachable, cmdutil.ExitBackend},
		{provider.ErrThrottled, cmdutil.ExitBackend},
		{vaultfile.ErrNotExist, cmdutil.ExitVault},
		{vaultfile.ErrExists, cmdutil.ExitVault},
		{vaultfile.ErrWrongKey, cmdutil.ExitVault},
		{vaultfile.ErrIntegrity, cmdutil.ExitVault},
		{vaultfile.ErrKey, cmdutil.ExitVault},
		{vaultfile.ErrLocked, cmdutil.ExitVault},
	}
}

// ExitCode prints err (if any) and returns the process exit code for it.
func ExitCode(ios *iostreams.IOStreams, err error) int {
	if err == nil {
		return cmdutil.ExitOK
	}
	var ee *cmdutil.ExitError
	if errors.Is(err, cmdutil.ErrSilent) {
		if errors.As(err, &ee) {
			return ee.Code
		}
		return cmdutil.ExitFailure
	}
	fmt.Fprintln(ios.ErrOut, "Error:", err)
	if errors.As(err, &ee) {
		return ee.Code
	}
	var re *secretref.Error
	if errors.As(err, &re) {
		return cmdutil.ExitSecret
	}
	for _, r := range exitRules() {
		if errors.Is(err, r.target) {
			return r.code
		}
	}
	if isCobraUsageError(err) {
		return cmdutil.ExitUsage
	}
	return cmdutil.ExitFailure
}

// isCobraUsageError recognises cobra's own messages for unknown commands.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") || strings.HasPrefix(msg, "unknown shorthand flag")
}
