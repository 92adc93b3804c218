package agent

import "golang.org/x/sys/unix"

// notDumpable marks the process not dumpable: no core dump, and no ptrace
// or /proc/PID/mem by other processes of the same user.
func notDumpable() error { return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) }
