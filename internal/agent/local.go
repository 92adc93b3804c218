package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/config"
)

// SystemLock is held by the system agent (systemd, mode agent).
const SystemLock = "/run/dso/agent.lock"

// LocalDir is where the user-scope agent keeps its lock and log: ~/.dso/run.
func LocalDir() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the home directory: %w", err)
	}
	return filepath.Join(home, ".dso", "run"), nil
}

// Lock is the lock file an agent holds while it runs; it holds its pid.
type Lock struct{ f *os.File }

// ErrRunning says another agent holds the lock.
var ErrRunning = errors.New("an agent is already running")

// AcquireLock takes the lock at path, or fails with ErrRunning.
func AcquireLock(path string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid, _ := LockHolder(path)
			return nil, fmt.Errorf("%w (pid %d, lock %s)", ErrRunning, pid, path)
		}
		return nil, err
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

// SystemID names the system agent in the dso.agent label.
const SystemID = "system"

// LocalID names the local agent of the user whose agent directory is dir:
// several users (or test homes) on one engine each serve their own
// containers only.
func LocalID(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "local-" + hex.EncodeToString(sum[:6])
}

// Choose returns the agent that will serve containers started now: the
// system agent when it runs or dso.yaml says mode agent, else the user's.
func Choose(cfg *config.Config) (string, error) {
	if Held(SystemLock) || cfg != nil && cfg.Mode == config.ModeAgent {
		return SystemID, nil
	}
	dir, err := LocalDir()
	if err != nil {
		return "", err
	}
	return LocalID(dir), nil
}

// EnsureLocal makes sure the agent chosen by Choose runs: the system agent
// must run already (mode agent); a user-scope agent is started here in the
// background when none runs (local mode has no systemd), with the dso.yaml
// at cfgPath (if any) as its own configuration: polling interval, API,
// notifications. An agent already running keeps the configuration it
// started with.
func EnsureLocal(ctx context.Context, cfg *config.Config, cfgPath string, log io.Writer) error {
	id, err := Choose(cfg)
	if err != nil {
		return err
	}
	if id == SystemID {
		if Held(SystemLock) {
			return nil
		}
		return errors.New("dso.yaml says mode: agent, but the dso agent is not running: start it with `sudo systemctl start dso-agent`")
	}
	dir, err := LocalDir()
	if err != nil {
		return err
	}
	lock := filepath.Join(dir, "agent.lock")
	if Held(lock) {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "agent.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"agent", "--local"}
	if cfgPath != "" {
		args = append(args, "--config", cfgPath)
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = agentEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the local dso agent: %w", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !Held(lock) {
		select {
		case err := <-exited:
			return fmt.Errorf("the local dso agent stopped at once (%v); see %s", err, logPath)
		case <-deadline.C:
			return fmt.Errorf("the local dso agent did not start within 10s; see %s", logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	fmt.Fprintf(log, "dso: started the local agent (pid %d, log %s; stop it with `docker dso agent stop`)\n", pid, logPath)
	return nil
}

// agentEnv is the environment of a background agent: the user's, less what
// would make it believe it is a CLI plugin invocation.
func agentEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, "DOCKER_CLI_PLUGIN_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// Dial returns a client of the running agent's local API: the system
// agent's socket when it runs, else the user's local agent.
func Dial() (*api.Client, error) {
	if Held(SystemLock) {
		return api.NewClient(api.DefaultSocketPath), nil
	}
	sock, err := api.LocalSocketPath()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(sock); errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("cannot reach the agent socket %s: permission denied (the agent's user, root and members of the dso group may use it)", sock)
	} else if err != nil {
		return nil, errors.New("no dso agent is running (`docker dso up` starts one in local mode; `sudo systemctl start dso-agent` in agent mode)")
	}
	return api.NewClient(sock), nil
}
