package agentctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/config"
)

// pollEvery is how often the waits below look at the lock.
const pollEvery = 20 * time.Millisecond

// EnsureLocal makes sure the agent chosen by Serving runs: the system agent
// must run already (mode agent); a user-scope agent is started here in the
// background when none runs (local mode has no systemd), with the dso.yaml
// at cfgPath (if any) as its own configuration: polling interval, API,
// notifications. An agent already running keeps the configuration it
// started with. It waits on clk for the new agent to take its lock.
func EnsureLocal(ctx context.Context, clk clock.Clock, cfg *config.Config, cfgPath string, log io.Writer) error {
	w, err := Serving(cfg)
	if err != nil {
		return err
	}
	if Held(w.Lock) {
		return nil
	}
	if w.Kind == System {
		return errors.New("dso.yaml says mode: agent, but the dso agent is not running: start it with `sudo systemctl start dso-agent`")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(w.Lock), 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(w.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"agent", "--local"}
	if cfgPath != "" {
		args = append(args, "--config", cfgPath)
	}
	// What it runs with, until `agent stop` removes it: a local agent that
	// dies leaves it behind, so that Revive can start it again.
	if err := os.WriteFile(runsWith(w), []byte(cfgPath), 0o600); err != nil {
		return err
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
	deadline := clk.TimerAt(clk.Now().Add(10 * time.Second))
	defer deadline.Stop()
	for !Held(w.Lock) {
		tick := clk.TimerAt(clk.Now().Add(pollEvery))
		select {
		case err := <-exited:
			tick.Stop()
			return fmt.Errorf("the local dso agent stopped at once (%v); see %s", err, w.Log)
		case <-deadline.C():
			tick.Stop()
			return fmt.Errorf("the local dso agent did not start within 10s; see %s", w.Log)
		case <-ctx.Done():
			tick.Stop()
			return ctx.Err()
		case <-tick.C():
		}
	}
	fmt.Fprintf(log, "dso: started the local agent (pid %d, log %s; stop it with `docker dso agent stop`)\n", pid, w.Log)
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

// Dial returns a client of the agent that serves this host (Serving): its
// socket as Locate finds it, so agent.socket of cfg is honoured.
func Dial(cfg *config.Config) (*api.Client, error) {
	w, err := Serving(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(w.Socket); errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("cannot reach the agent socket %s: permission denied (the agent's user, root and members of the dso group may use it)", w.Socket)
	} else if err != nil {
		if w.Kind == System {
			return nil, fmt.Errorf("the system dso agent's socket %s is missing (%v): `sudo systemctl start dso-agent` starts it", w.Socket, err)
		}
		return nil, errors.New("no dso agent is running (`docker dso up` starts one in local mode; `sudo systemctl start dso-agent` in agent mode)")
	}
	return api.NewClient(w.Socket), nil
}

// StopLocal stops the user's local agent with SIGTERM and waits on clk, up
// to 30 seconds (a stopping agent lets the rotations in flight finish for
// up to 20), for it to give its lock up. It returns the agent's pid, or 0
// when none ran.
func StopLocal(ctx context.Context, clk clock.Clock) (int, error) {
	w, err := Locate(true, nil)
	if err != nil {
		return 0, err
	}
	if !Held(w.Lock) {
		return 0, nil
	}
	pid, err := LockHolder(w.Lock)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", w.Lock, err)
	}
	os.Remove(runsWith(w))
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return pid, fmt.Errorf("stop the local agent (pid %d): %w", pid, err)
	}
	deadline := clk.Now().Add(30 * time.Second)
	for Held(w.Lock) {
		if !clk.Now().Before(deadline) {
			return pid, fmt.Errorf("the local agent (pid %d) did not stop within 30s", pid)
		}
		if err := clock.Sleep(ctx, clk, 50*time.Millisecond); err != nil {
			return pid, err
		}
	}
	return pid, nil
}

// runsWith is the file that holds the dso.yaml path a local agent was
// started with, while it is meant to run.
func runsWith(w Where) string { return filepath.Join(filepath.Dir(w.Lock), "agent.config") }

// Revive starts the user's local agent again when it died: it was started
// (EnsureLocal) and not stopped (StopLocal), and no longer holds its lock.
// Local mode has no systemd to do that; the commands that need the agent
// (status, watch) call this. It says so on log and returns whether it
// started one.
func Revive(ctx context.Context, clk clock.Clock, log io.Writer) (bool, error) {
	w, err := Serving(nil)
	if err != nil || w.Kind != Local || Held(w.Lock) {
		return false, err
	}
	cfgPath, err := os.ReadFile(runsWith(w))
	if err != nil {
		return false, nil // never started, or stopped on purpose
	}
	var cfg *config.Config
	if len(cfgPath) > 0 {
		if cfg, err = config.Load(string(cfgPath)); err != nil {
			return false, err
		}
	}
	fmt.Fprintln(log, "dso: the local agent had died (it was not stopped with `docker dso agent stop`); starting it again")
	return true, EnsureLocal(ctx, clk, cfg, string(cfgPath), log)
}
