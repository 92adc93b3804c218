package agentctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Lock is the lock file an agent holds while it runs; it holds its pid.
type Lock struct{ f *os.File }

// ErrRunning says another agent holds the lock.
var ErrRunning = errors.New("an agent is already running")

// probeWait is how long AcquireLock retries a lock held by someone else
// before it says an agent runs.
const probeWait = time.Second

// AcquireLock takes the lock at path, or fails with ErrRunning.
func AcquireLock(path string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	// Held takes the lock shared for a moment: an agent starting in that
	// moment (the CLI that started it polls Held) must not take it for
	// another agent. One that runs holds it for longer than probeWait.
	deadline := time.Now().Add(probeWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				pid, _ := LockHolder(path)
				return nil, fmt.Errorf("%w (pid %d, lock %s)", ErrRunning, pid, path)
			}
			return nil, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return &Lock{f: f}, nil
}

// Release gives the lock up.
func (l *Lock) Release() { l.f.Close() }

// Held reports whether some process holds the lock at path.
func Held(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// LockHolder returns the pid written in the lock file at path.
func LockHolder(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
