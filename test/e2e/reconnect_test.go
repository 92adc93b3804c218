package e2e

import (
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// engineLink is a unix socket that forwards to the Docker engine and can be
// cut and restored, standing in for an engine that goes away and comes back
// (the engine here is shared, so no test restarts the real daemon).
type engineLink struct {
	t               *testing.T
	path            string
	network, target string // where the engine listens

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func newEngineLink(t *testing.T) *engineLink {
	l := &engineLink{t: t, path: filepath.Join(t.TempDir(), "engine.sock"), network: "unix", target: "/var/run/docker.sock"}
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		u, err := url.Parse(h)
		switch {
		case err == nil && u.Scheme == "unix":
			l.target = u.Path
		case err == nil && u.Scheme == "tcp" && os.Getenv("DOCKER_TLS_VERIFY") == "":
			l.network, l.target = "tcp", u.Host
		default:
			testbed.Unavailable(t, "the engine is at %s: the test forwards a unix socket to a unix or plain tcp engine only", h)
		}
	}
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
			e, err := net.Dial(l.network, l.target)
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c, e)
			l.mu.Unlock()
			// Half-closes are passed on (an exec's stdin ends so), and
			// both ends close when both directions ended.
			var both sync.WaitGroup
			both.Go(func() { io.Copy(e, c); closeWrite(e) })
			both.Go(func() { io.Copy(c, e); closeWrite(c) })
			go func() { both.Wait(); c.Close(); e.Close() }()
		}
	}()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
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
	dir := writeProject(t, map[string]string{"compose.yaml": tokenCompose(t)})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": v})
	u.must(dir, nil, "dso", "up", "-p", project, "-d", "--wait")
	id := serviceContainer(t, project, "api")

	link.down()
	waitFor(t, "the agent to notice the lost engine", func() bool { return strings.Contains(agentLog(t, u), "reconnecting") })
	before := inspect(t, id).State.StartedAt
	if _, err := testbed.Docker(t).ContainerRestart(t.Context(), id, client.ContainerRestartOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the container to run again", func() bool {
		st := inspect(t, id).State
		return st.Running && st.StartedAt != before
	})
	if _, _, ok := answer(t, project, "api", "/env/TOKEN"); ok {
		t.Fatal("the app answered while no agent could reach the engine: the test does not test what it claims")
	}
	link.up()
	waitFor(t, "the agent to deliver after the engine came back", func() bool {
		_, b, ok := answer(t, project, "api", "/env/TOKEN")
		return ok && b == string(v)
	})
}
