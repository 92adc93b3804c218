package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// noArgs rejects positional arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError(cmd, fmt.Errorf("%q takes no arguments, got %q", cmd.CommandPath(), strings.Join(args, " ")))
	}
	return nil
}

// exactArgs requires n positional arguments, named in the error.
func exactArgs(n int, names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError(cmd, fmt.Errorf("%q needs %d argument(s) (%s), got %d", cmd.CommandPath(), n, strings.Join(names, ", "), len(args)))
		}
		return nil
	}
}

// isCobraUsageError recognises cobra's own messages for unknown commands.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") || strings.HasPrefix(msg, "unknown shorthand flag")
}
