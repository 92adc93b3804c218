package agent

import (
	"errors"

	"golang.org/x/sys/unix"
)

// notDumpable is macOS's counterpart of Linux's PR_SET_DUMPABLE 0: no core
// file (RLIMIT_CORE 0) and no debugger attaching (PT_DENY_ATTACH).
func notDumpable() error {
	return errors.Join(unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}), unix.PtraceDenyAttach())
}
