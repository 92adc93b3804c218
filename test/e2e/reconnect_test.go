package e2e

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// engineLink is a unix socket that forwards to the Docker engine and can be
// cut and restored, standing in for an engine that goes away and comes back
// (the engine here is shared, so no test restarts the real daemon).
type engineLink struct {
	t      *testing.T
	path   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func newEngineLink(t *testing.T) *engineLink {
	target := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		target = strings.TrimPrefix(h, "unix://")
	} else if h != "" {
		t.Skipf("the engine is at %s, not on a unix socket", h)
	}
	l := &engineLink{t: t, path: filepath.Join(t.TempDir(), "engine.sock"), target: target}
	l.up()
	t.Cleanup(l.down)
	return l
}

func (l *engineLink) up() {
	ln, err := net.Listen("unix", l.path)
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e, err := net.Dial("unix", l.target)
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c, e)
			l.mu.Unlock()
			go func() { io.Copy(e, c); e.Close() }()
			go func() { io.Copy(c, e); c.Close() }()
		}
	}()
}

// down closes the socket and every connection through it.
func (l *engineLink) down() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
	os.Remove(l.path)
}

// TestAgentServesContainersAfterEngineReturns: the agent loses the engine,
// a container restarts meanwhile (its start event never reaches the agent),
// and when the engine is back the agent finds it waiting and delivers.
func TestAgentServesContainersAfterEngineReturns(t *testing.T) {
	u := newUser(t)
	link := newEngineLink(t)
	u.env = append(u.env, "DOCKER_HOST=unix://"+link.path)
	v := canary(t, "back")
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    environment:
      TOKEN: dso://app/token
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": v})
	u.must(dir, nil, "dso", "up", "-p", project, "-d", "--wait")
	id := serviceContainer(t, project, "api")

	link.down()
	if _, err := testbed.Docker(t).ContainerRestart(t.Context(), id, client.ContainerRestartOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if _, _, ok := answer(t, project, "api", "/env/TOKEN"); ok {
		t.Fatal("the app answered while no agent could reach the engine: the test does not test what it claims")
	}
	link.up()
	waitFor(t, "the agent to deliver after the engine came back", func() bool {
		_, b, ok := answer(t, project, "api", "/env/TOKEN")
		return ok && b == string(v)
	})
	if log := agentLog(t, u); !strings.Contains(log, "reconnecting") {
		t.Errorf("the agent log does not show the lost engine:\n%s", log)
	}
}
