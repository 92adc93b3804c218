package agentctl

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dso-project/dso/internal/config"
)

// TestLocateHonoursAgentSocket: the system agent's socket is agent.socket
// of dso.yaml, for the agent and for every command that dials it; the
// local agent's files are under the user's home.
func TestLocateHonoursAgentSocket(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_RUNTIME_DIR", "")
	cfg := &config.Config{Agent: config.Agent{Socket: "/srv/dso/agent.sock"}}
	w, err := Locate(false, cfg)
	if err != nil || w.Socket != "/srv/dso/agent.sock" || w.ID != SystemID || w.Lock != SystemLock {
		t.Fatalf("system agent with agent.socket: %+v, %v", w, err)
	}
	if w, _ := Locate(false, nil); w.Socket != "/run/dso/dso.sock" {
		t.Fatalf("system agent without dso.yaml: socket %s, want /run/dso/dso.sock", w.Socket)
	}
	w, err = Locate(true, cfg)
	run := filepath.Join(home, ".dso", "run")
	if err != nil || w.Socket != filepath.Join(run, "dso.sock") || w.Lock != filepath.Join(run, "agent.lock") || w.ID != LocalID(run) {
		t.Fatalf("local agent: %+v, %v", w, err)
	}
	if w, _ := Serving(&config.Config{Mode: config.ModeAgent, Agent: config.Agent{Socket: "/srv/dso/agent.sock"}}); w.Kind != System || w.Socket != "/srv/dso/agent.sock" {
		t.Fatalf("mode agent serves through %+v, want the system agent on agent.socket", w)
	}
}

func TestLockIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.lock")
	if Held(path) {
		t.Fatal("a lock no one took is held")
	}
	l, err := AcquireLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if !Held(path) {
		t.Fatal("a taken lock is not held")
	}
	if _, err := AcquireLock(path); err == nil {
		t.Fatal("a second agent took a held lock")
	}
	l.Release()
	if Held(path) {
		t.Fatal("a released lock is still held")
	}
}

// TestLockSurvivesAProbe: a process asking Held at the moment an agent
// takes the lock (its shared lock held a while, as on a loaded machine)
// does not make the agent believe another one runs.
func TestLockSurvivesAProbe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.lock")
	probe, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	fd := int(probe.Fd())
	if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(100 * time.Millisecond)
		unix.Flock(fd, unix.LOCK_UN)
	}()
	l, err := AcquireLock(path)
	<-released
	if err != nil {
		t.Fatalf("the agent gave up on a lock a probe held for 100 ms: %v", err)
	}
	l.Release()
}
