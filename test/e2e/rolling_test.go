package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/testbed"
)

// proxyAddr returns the host address of the proxy of a service for a
// container port ("" when it has none yet).
func proxyAddr(t *testing.T, project, service string, port uint16) string {
	t.Helper()
	return publishedAddr(t, project, "dso.proxy.for="+service, port)
}

// publishedAddr returns the host address where the one running container
// of project with label publishes port ("" when there is none, or more than
// one container).
func publishedAddr(t *testing.T, project, label string, port uint16) string {
	t.Helper()
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project, label).Add("status", "running")
	list, err := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{Filters: f})
	if err != nil || len(list.Items) != 1 {
		return ""
	}
	for _, p := range list.Items[0].Ports {
		if p.PrivatePort == port && p.PublicPort != 0 {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.PublicPort)))
		}
	}
	return ""
}

// appsRunning counts the running containers of a service whose
// application runs: their init (PID 1) has started it, as its child. A
// container that waits for its secrets runs the init alone. It fails when
// it cannot read the process table.
func appsRunning(t *testing.T, project, service string) (int, error) {
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project, "com.docker.compose.service="+service).Add("status", "running")
	list, err := testbed.Docker(t).ContainerList(context.Background(), client.ContainerListOptions{Filters: f})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range list.Items {
		ins, err := testbed.Docker(t).ContainerInspect(context.Background(), c.ID, client.ContainerInspectOptions{})
		if err != nil || ins.Container.State == nil || ins.Container.State.Pid == 0 {
			continue // gone or stopped meanwhile
		}
		// The children of each of the init's threads (Go forks from any).
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", ins.Container.State.Pid))
		if errors.Is(err, fs.ErrNotExist) {
			continue // exited meanwhile
		}
		if err != nil {
			return 0, fmt.Errorf("the processes of container %.12s: %w", c.ID, err)
		}
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", ins.Container.State.Pid, task.Name()))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return 0, fmt.Errorf("the processes of container %.12s: %w", c.ID, err)
			}
			if strings.TrimSpace(string(b)) != "" {
				n++
				break
			}
		}
	}
	return n, nil
}

// serviceAddr is where a user reaches a service's port 8080: the host port
// of its proxy (rolling, the default), else its own.
func serviceAddr(t *testing.T, project, service string) string {
	t.Helper()
	var addr string
	waitFor(t, "a published port of "+service, func() bool {
		if addr = proxyAddr(t, project, service, 8080); addr == "" {
			addr = servicePort(t, project, service)
		}
		return addr != ""
	})
	return addr
}

// load sends requests to addr until stopped: a new connection per request
// from several workers and, when asked, one long-lived keep-alive
// connection whose connections' opening times are recorded.
type load struct {
	addr, path string
	ok         atomic.Int64
	mu         sync.Mutex
	failed     []failure
	cut        []connLife // long-lived connections that the server side ended
	stopc      chan struct{}
	wg         sync.WaitGroup
}

// clientTimeout is longer than the proxy's hold bound (60s): a client
// that waits is answered or closed by the proxy, never cut by its own
// deadline, on a machine however loaded.
const clientTimeout = 90 * time.Second

func startLoad(t *testing.T, addr, path string, workers int, longLived bool) *load {
	l := &load{addr: addr, path: path, stopc: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			l.worker(&http.Client{Timeout: clientTimeout, Transport: &http.Transport{DisableKeepAlives: true}})
		})
	}
	if longLived {
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &watchedConn{Conn: c, l: l, opened: time.Now()}, nil
		}
		l.wg.Go(func() {
			l.worker(&http.Client{Timeout: clientTimeout, Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DialContext: dial}})
		})
	}
	t.Cleanup(func() { l.stop() })
	return l
}

// connLife is when a long-lived connection was opened and when the server
// side ended it.
type connLife struct{ opened, ended time.Time }

// watchedConn records when the server side of a long-lived connection ends
// it (a read error: end of stream, reset). The client's transport may close
// a connection itself too (Go's does when, on a starved machine, its writer
// goroutine reports a request written more than 50 ms after the answer
// came): that is no cut, and not recorded.
type watchedConn struct {
	net.Conn
	l      *load
	opened time.Time
	once   sync.Once
}

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.once.Do(func() {
			c.l.mu.Lock()
			c.l.cut = append(c.l.cut, connLife{c.opened, time.Now()})
			c.l.mu.Unlock()
		})
	}
	return n, err
}

func (l *load) worker(c *http.Client) {
	for {
		select {
		case <-l.stopc:
			return
		default:
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+l.addr+l.path, nil)
		start := time.Now()
		resp, err := c.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		if err != nil {
			l.mu.Lock()
			l.failed = append(l.failed, failure{start: start, end: time.Now(), err: err})
			l.mu.Unlock()
		} else {
			l.ok.Add(1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// done is how many requests were answered so far.
func (l *load) done() int64 { return l.ok.Load() }

// stop ends the load and returns how many requests were answered and the
// errors of those that failed.
func (l *load) stop() (ok int, failed []string) {
	select {
	case <-l.stopc:
	default:
		close(l.stopc)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.failed {
		failed = append(failed, f.String())
	}
	return int(l.ok.Load()), failed
}

// failure is a request that failed.
type failure struct {
	start, end time.Time
	err        error
}

func (f failure) String() string { return f.end.Format("15:04:05.000") + " " + f.err.Error() }

// excuseCut drops the failures of the requests that were under way at
// `at`, when a proxy's process was killed, and that the kill cut (a reset
// or an end of stream: a killed process's connections end with it, no
// proxy can keep them), and returns them. A refusal, or any failure of a
// request that started after at, stays a failure.
func (l *load) excuseCut(at time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var excused []string
	kept := l.failed[:0]
	for _, f := range l.failed {
		cut := errors.Is(f.err, syscall.ECONNRESET) || errors.Is(f.err, io.EOF) || errors.Is(f.err, io.ErrUnexpectedEOF)
		if cut && f.start.Before(at) && !f.end.Before(at) {
			excused = append(excused, f.String())
			continue
		}
		kept = append(kept, f)
	}
	l.failed = kept
	return excused
}

// finish stops the load and fails the test on any failed request.
func (l *load) finish(t *testing.T) {
	t.Helper()
	ok, failed := l.stop()
	t.Logf("load on %s: %d requests answered, %d failed", l.addr, ok, len(failed))
	if len(failed) > 0 || ok == 0 {
		t.Errorf("load on %s: %d of %d requests failed: %s", l.addr, len(failed), len(failed)+ok, strings.Join(failed[:min(5, len(failed))], "; "))
	}
}

// logsOnFailure puts the agent's log and the logs of the named containers
// in the test's output when it fails (before the project is removed).
func logsOnFailure(t *testing.T, u *user, containers ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, name := range containers {
			out, _ := exec.Command("docker", "logs", "-t", name).CombinedOutput()
			t.Logf("logs of %s:\n%s", name, out)
		}
		t.Logf("agent log:\n%s", agentLog(t, u))
	})
}

// checkLongLived fails the test when the server side (the proxy, or the
// container behind it) ended a long-lived connection sooner than bound
// after it was opened: a drain gives a connection at least its bound after
// the switch, and a connection to the old container was opened before.
func (l *load) checkLongLived(t *testing.T, bound time.Duration) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.cut) == 0 {
		t.Errorf("no long-lived connection to %s was ended by a drain: the check saw nothing", l.addr)
	}
	for _, c := range l.cut {
		if life := c.ended.Sub(c.opened); life < bound {
			t.Errorf("a long-lived connection to %s opened at %s was ended after %s, before the drain bound %s", l.addr, c.opened.Format("15:04:05.000"), life, bound)
		}
	}
}

// killLocalAgent kills the user's local agent with SIGKILL and waits until
// it is gone.
func killLocalAgent(t *testing.T, u *user) {
	t.Helper()
	pid := agentPID(t, u)
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "the killed agent to be gone", func() bool { return syscall.Kill(pid, 0) != nil })
}

// startLocalAgent starts the user's local agent by hand, as systemd would
// (not through `docker dso up`, which would run compose again), with env
// added, logging to the usual agent.log.
func startLocalAgent(t *testing.T, u *user, cfg string, env ...string) {
	t.Helper()
	logPath := filepath.Join(u.home, ".dso", "run", "agent.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{"agent", "--local"}
	if cfg != "" {
		args = append(args, "--config", cfg)
	}
	cmd := exec.Command(filepath.Join(u.home, ".docker", "cli-plugins", "docker-dso"), args...)
	cmd.Env = append(append([]string{}, u.env...), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	sock := filepath.Join(u.home, ".dso", "run", "dso.sock")
	waitFor(t, "the agent's socket", func() bool { _, err := os.Stat(sock); return err == nil && u.run("", nil, "dso", "status").code == 0 })
}

// containerStates returns name -> state of every container of a project.
func containerStates(t *testing.T, project string) map[string]string {
	t.Helper()
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project)
	list, err := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range list.Items {
		out[strings.TrimPrefix(c.Names[0], "/")] = string(c.State)
	}
	return out
}

// clean reports whether the project holds exactly the wanted containers,
// each running.
func clean(t *testing.T, project string, want ...string) (bool, string) {
	got := containerStates(t, project)
	ok := len(got) == len(want)
	for _, n := range want {
		ok = ok && got[n] == "running"
	}
	return ok, fmt.Sprint(got)
}

// rollingProject is two rolling services with the same secret: web with
// compose ports, db in the seed's expose + dso.host_ports form; more
// services, in compose YAML, may follow.
func rollingProject(t *testing.T, drain string, more ...string) (dir, project, dbPort string) {
	dbPort = freePort(t)
	dir = writeProject(t, map[string]string{
		"compose.yaml": `
services:
  web:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    environment:
      TOKEN: dso://app/token
  db:
    image: ` + testbed.TestappImage(t) + `
    expose: ["8080"]
    labels:
      dso.update.strategy: rolling
      dso.host_ports: "127.0.0.1:` + dbPort + `:8080"
    environment:
      TOKEN: dso://app/token
` + strings.Join(more, ""),
		"dso.yaml": "providers:\n  local: {type: local}\nagent:\n  rotation:\n    drain_timeout: " + drain + "\n",
	})
	return dir, testbed.Project(t, dir), dbPort
}

// TestRollingZeroDowntime: two rolling services under steady load (a new
// connection per request, and a long-lived connection) through 20
// rotations and a kill -9 of the agent at a random moment of one: no
// request fails, long-lived connections end only by the drain bound, and
// one container per service is left, under its compose name; the proxies
// never restarted. (Kills of the agent at each step of a rotation are
// TestRotationCrashRecovery; more timed kills, TestRotationTimedKill.)
func TestRollingZeroDowntime(t *testing.T) {
	u := newUser(t)
	const drain = 2 * time.Second
	dir, project, dbPort := rollingProject(t, drain.String())
	values := [][]byte{canary(t, "r0")}
	u.initVault(map[string][]byte{"app/token": values[0]})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	webAddr := ""
	waitFor(t, "the web proxy", func() bool { webAddr = proxyAddr(t, project, "web", 8080); return webAddr != "" })
	dbAddr := "127.0.0.1:" + dbPort
	for _, addr := range []string{webAddr, dbAddr} {
		waitFor(t, "the first value at "+addr, func() bool {
			s, b := testbed.HTTPGet(t, "http://"+addr+"/env/TOKEN")
			return s == 200 && b == string(values[0])
		})
	}
	ps := u.must(dir, nil, "dso", "ps", "-p", project)
	if !strings.Contains(ps.stdout, "127.0.0.1:"+dbPort+"->8080/tcp") || !strings.Contains(ps.stdout, strings.TrimPrefix(webAddr, "")+"->8080/tcp") {
		t.Errorf("docker dso ps does not show the ports a user can reach (%s, %s):\n%s", webAddr, dbAddr, ps.stdout)
	}
	loads := []*load{startLoad(t, webAddr, "/env/TOKEN", 3, true), startLoad(t, dbAddr, "/env/TOKEN", 3, true)}
	logsOnFailure(t, u, project+"-web-dso-proxy-1", project+"-db-dso-proxy-1")

	for i := 1; i <= 20; i++ {
		values = append(values, canary(t, fmt.Sprintf("r%d", i)))
		v := string(values[i])
		u.must("", values[i], "dso", "secret", "set", "app/token")
		if i == 10 {
			// A kill -9 at a random moment of the rotation, as a user
			// would see one; started again as systemd would.
			delay := time.Duration(rand.Int64N(int64(3 * time.Second)))
			time.Sleep(delay)
			killLocalAgent(t, u)
			startLocalAgent(t, u, filepath.Join(dir, "dso.yaml"))
			t.Logf("the agent was killed %s after the change of rotation %d", delay.Round(time.Millisecond), i)
		}
		for _, addr := range []string{webAddr, dbAddr} {
			waitFor(t, fmt.Sprintf("value %d at %s", i, addr), func() bool { s, b := testbed.HTTPGet(t, "http://"+addr+"/env/TOKEN"); return s == 200 && b == v })
		}
		waitFor(t, fmt.Sprintf("one container per service after rotation %d", i), func() bool {
			ok, _ := clean(t, project, project+"-web-1", project+"-db-1", project+"-web-dso-proxy-1", project+"-db-dso-proxy-1")
			return ok
		})
	}
	for _, l := range loads {
		l.finish(t)
		l.checkLongLived(t, drain)
	}
	for _, name := range []string{project + "-web-dso-proxy-1", project + "-db-dso-proxy-1"} {
		ins, err := testbed.Docker(t).ContainerInspect(t.Context(), name, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ins.Container.RestartCount != 0 {
			t.Errorf("proxy %s restarted %d times", name, ins.Container.RestartCount)
		}
	}
	if ok, got := clean(t, project, project+"-web-1", project+"-db-1", project+"-web-dso-proxy-1", project+"-db-dso-proxy-1"); !ok {
		t.Errorf("after the rotations the project holds %s", got)
	}
	// db's host port is fixed: the agent (root's, the engine local) bound
	// it and handed it to the proxy, which Docker publishes nothing onto;
	// web's is picked by the engine, so Docker publishes it. A proxy that
	// restarts gets its port again.
	for name, published := range map[string]bool{project + "-web-dso-proxy-1": true, project + "-db-dso-proxy-1": false} {
		ins, err := testbed.Docker(t).ContainerInspect(t.Context(), name, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(ins.Container.HostConfig.PortBindings) > 0; got != published {
			t.Errorf("proxy %s: Docker publishes its ports: %v, want %v", name, got, published)
		}
	}
	u.must(dir, nil, "restart", project+"-db-dso-proxy-1")
	last := string(values[len(values)-1])
	waitFor(t, "the value at "+dbAddr+" after the proxy's restart", func() bool {
		s, b := testbed.HTTPGet(t, "http://"+dbAddr+"/env/TOKEN")
		return s == 200 && b == last
	})
	assertNoLeak(t, u, values, agentLog(t, u))
}

// TestRollingStatefulStopsFirst: a service with a named volume never runs
// two applications at once (the new container may start while the old one
// stops, but its application starts only with its secrets, once the old
// one has stopped); clients that connect during the swap wait and get the
// new value, none is refused.
func TestRollingStatefulStopsFirst(t *testing.T) {
	u := newUser(t)
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  store:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    volumes: ["data:/data"]
    environment:
      TOKEN: dso://app/token
volumes:
  data: {}
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": []byte("s0")})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	addr := ""
	waitFor(t, "the proxy", func() bool { addr = proxyAddr(t, project, "store", 8080); return addr != "" })
	waitFor(t, "the first value", func() bool { s, b := testbed.HTTPGet(t, "http://"+addr+"/env/TOKEN"); return s == 200 && b == "s0" })

	l := startLoad(t, addr, "/healthz", 4, false)
	most := atomic.Int64{}
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			n, err := appsRunning(t, project, "store")
			if err != nil {
				t.Error(err)
				return
			}
			most.Store(max(most.Load(), int64(n)))
			time.Sleep(20 * time.Millisecond)
		}
	}()
	u.must("", []byte("s1"), "dso", "secret", "set", "app/token")
	waitFor(t, "the new value", func() bool { s, b := testbed.HTTPGet(t, "http://"+addr+"/env/TOKEN"); return s == 200 && b == "s1" })
	waitFor(t, "the rotation to finish", func() bool {
		ok, _ := clean(t, project, project+"-store-1", project+"-store-dso-proxy-1")
		return ok
	})
	close(stopWatch)
	<-watched
	l.finish(t)
	if most.Load() != 1 {
		t.Errorf("a stateful service ran %d applications at once, want 1 (0: the watch never saw one)", most.Load())
	}
	// The new container got one delivery: the rotation's, not also the
	// start event's.
	newID := serviceContainer(t, project, "store")
	if n := strings.Count(agentLog(t, u), `"msg":"delivered secrets","container":"`+newID[:12]+`"`); n != 1 {
		t.Errorf("the new container got %d deliveries, want 1", n)
	}
	r := u.must("", nil, "dso", "status", "--json")
	if !strings.Contains(r.stdout, `"order": "stop-first"`) {
		t.Errorf("the rotation is not journaled as stop-first:\n%s", r.stdout)
	}
}

// TestRollingUnhealthyKeepsOld: the new container never gets healthy: it
// is removed, the proxy never switched (no request failed and every answer
// came from the old container), and the failure is reported.
func TestRollingUnhealthyKeepsOld(t *testing.T) {
	u := newUser(t)
	dir := healthcheckedProject(t, `["CMD", "/testapp", "check", "/env/TOKEN", "good"]
      interval: 1s
      retries: 2`, "8s")
	project, addr := upBehindProxy(t, u, dir, "good")
	oldID := serviceContainer(t, project, "api")

	l := startLoad(t, addr, "/env/TOKEN", 2, false)
	u.must("", []byte("bad"), "dso", "secret", "set", "app/token")
	waitFor(t, "the failed rotation in the status", func() bool {
		r := u.run(dir, nil, "dso", "status", "--json")
		return strings.Contains(r.stdout, `"result": "failure"`)
	})
	l.finish(t)
	if s, b := testbed.HTTPGet(t, "http://"+addr+"/env/TOKEN"); s != 200 || b != "good" {
		t.Errorf("after the failed rotation the proxy answers %d %q, want the old container's value", s, b)
	}
	if got := serviceContainer(t, project, "api"); got != oldID {
		t.Errorf("the old container was replaced")
	}
	if ok, got := clean(t, project, project+"-api-1", project+"-api-dso-proxy-1"); !ok {
		t.Errorf("after the failed rotation the project holds %s", got)
	}
}

// TestRollingWaitsForTheHealthcheck: the engine runs a healthcheck first
// one interval after the start (the container is "starting" until then),
// so the wait for a new container's health counts from there: a service
// whose healthcheck interval is longer than health_check_timeout rotates,
// the old container serving meanwhile.
func TestRollingWaitsForTheHealthcheck(t *testing.T) {
	u := newUser(t)
	dir := healthcheckedProject(t, `["CMD", "/testapp", "check", "/healthz", "ok"]
      interval: 5s`, "2s")
	project, addr := upBehindProxy(t, u, dir, "first")

	l := startLoad(t, addr, "/env/TOKEN", 2, false)
	u.must("", []byte("second"), "dso", "secret", "set", "app/token")
	waitFor(t, "the new value", func() bool { s, b := testbed.HTTPGet(t, "http://"+addr+"/env/TOKEN"); return s == 200 && b == "second" })
	l.finish(t)
	if r := u.run(dir, nil, "dso", "status", "--json"); strings.Contains(r.stdout, `"result": "failure"`) {
		t.Errorf("a rotation failed on the way:\n%s", r.stdout)
	}
	waitFor(t, "one container under its compose name", func() bool {
		ok, _ := clean(t, project, project+"-api-1", project+"-api-dso-proxy-1")
		return ok
	})
	// The agent follows the rename: status names the new container as
	// docker ps does, not by its temporary name.
	id := serviceContainer(t, project, "api")
	if s, raw := status(t, u); !slices.ContainsFunc(s.Containers, func(c api.ContainerStatus) bool {
		return strings.HasPrefix(id, c.ID) && c.Name == project+"-api-1"
	}) {
		t.Errorf("docker dso status does not list container %.12s as %s-api-1:\n%s", id, project, raw)
	}
}

// healthcheckedProject writes tokenCompose with a healthcheck (test, then
// its other lines) and a dso.yaml of the local vault with the given
// health_check_timeout.
func healthcheckedProject(t *testing.T, test, timeout string) string {
	t.Helper()
	return writeProject(t, map[string]string{
		"compose.yaml": tokenCompose(t) + "    healthcheck:\n      test: " + test + "\n",
		"dso.yaml":     "providers:\n  local: {type: local}\nagent:\n  rotation:\n    health_check_timeout: " + timeout + "\n"})
}

// upBehindProxy starts the project in dir with app/token holding first, and
// returns its name and the address of the api service's proxy once that
// answers first.
func upBehindProxy(t *testing.T, u *user, dir, first string) (project, addr string) {
	t.Helper()
	project = testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": []byte(first)})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	waitFor(t, "the proxy", func() bool { addr = proxyAddr(t, project, "api", 8080); return addr != "" })
	waitFor(t, "the first value", func() bool { s, b := testbed.HTTPGet(t, "http://"+addr+"/env/TOKEN"); return s == 200 && b == first })
	return project, addr
}

// TestUpRefusesBadHostPorts: a host port already in use or claimed twice,
// a malformed dso.host_ports, a container port not exposed, a UDP port or
// an unknown dso.proxy.scheduling stops up before any container is
// created, with the file, the service and the value named.
func TestUpRefusesBadHostPorts(t *testing.T) {
	u := newUser(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, port, _ := net.SplitHostPort(busy.Addr().String())
	u.initVault(map[string][]byte{"app/token": []byte("x")})
	for _, tt := range []struct{ ports, want string }{
		{`ports: ["127.0.0.1:` + port + `:8080"]`, "host port 127.0.0.1:" + port + " is already in use"},
		{`labels: {dso.host_ports: "` + port + `"}`, `label dso.host_ports "` + port + `"`},
		{`labels: {dso.host_ports: "127.0.0.1:1:9999"}`, "container port 9999 is not exposed"},
		{`ports: ["127.0.0.1::53/udp"]`, "DSO's proxy forwards TCP only"},
		{`ports: ["127.0.0.1:1:8080", "1:8081"]`, "host port 1/tcp is claimed twice"},
		{"ports: [\"127.0.0.1:1:8080\"]\n    labels: {dso.proxy.scheduling: fast}", `label dso.proxy.scheduling "fast": want auto, normal or batch`},
	} {
		dir := writeProject(t, map[string]string{"compose.yaml": "services:\n  api:\n    image: " + testbed.TestappImage(t) + "\n    " + tt.ports + "\n    environment:\n      TOKEN: dso://app/token\n"})
		project := testbed.Project(t, dir)
		r := u.run(dir, nil, "dso", "up", "-p", project, "-d")
		// The file, the service and the value.
		if r.code != 3 || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, `compose.yaml: service "api"`) {
			t.Errorf("%s: exit %d, stderr %q; want exit 3 naming compose.yaml, service \"api\" and %q", tt.ports, r.code, r.stderr, tt.want)
		}
		if got := containerStates(t, project); len(got) != 0 {
			t.Errorf("%s: up created containers: %v", tt.ports, got)
		}
	}
}

// TestNetworkModesRotate: a service in another's network namespace
// (network_mode "service:web", a sidecar) rotates: its new container joins
// the same namespace (the engine gives it web's hostname and ports, and
// refuses them at create), after the old one stopped (two applications
// cannot listen on one port of one namespace), and serves the new value on
// web's published port. So do a service in the host's network namespace
// (network_mode: host) and one with an address of its own (ipv4_address),
// which the new container can take only once the old one stopped.
func TestNetworkModesRotate(t *testing.T) {
	u := newUser(t)
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  web:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::9090"]
  side:
    image: ` + testbed.TestappImage(t) + `
    network_mode: "service:web"
    environment:
      TESTAPP_ADDR: ":9090"
      TOKEN: dso://app/token
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": []byte("j0")})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	addr := ""
	waitFor(t, "web's published port", func() bool {
		addr = publishedAddr(t, project, "com.docker.compose.service=web", 9090)
		return addr != ""
	})
	waitFor(t, "the first value", func() bool { return tryGet(addr, "/env/TOKEN") == "j0" })
	web, err := testbed.Docker(t).ContainerInspect(t.Context(), project+"-web-1", client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.must("", []byte("j1"), "dso", "secret", "set", "app/token")
	waitServes(t, u, "side", addr, "j1")
	waitFor(t, "one container per service", func() bool {
		ok, _ := clean(t, project, project+"-web-1", project+"-side-1")
		return ok
	})
	side, err := testbed.Docker(t).ContainerInspect(t.Context(), project+"-side-1", client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if mode := string(side.Container.HostConfig.NetworkMode); mode != "container:"+web.Container.ID {
		t.Errorf("the new side container's network mode is %q, want web's namespace (container:%s)", mode, web.Container.ID)
	}

	hostAddr := "127.0.0.1:" + freePort(t)
	dir = writeProject(t, map[string]string{"compose.yaml": `
services:
  hostweb:
    image: ` + testbed.TestappImage(t) + `
    network_mode: host
    environment:
      TESTAPP_ADDR: "` + hostAddr + `"
      TOKEN: dso://app/token
`})
	project = testbed.Project(t, dir)
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	waitFor(t, "the value on the host's network", func() bool { return tryGet(hostAddr, "/env/TOKEN") == "j1" })
	u.must("", []byte("j2"), "dso", "secret", "set", "app/token")
	waitServes(t, u, "hostweb", hostAddr, "j2")
	waitFor(t, "one hostweb container", func() bool { ok, _ := clean(t, project, project+"-hostweb-1"); return ok })

	dir = writeProject(t, map[string]string{"compose.yaml": `
services:
  static:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    networks:
      fixed: {ipv4_address: 10.231.7.10}
    environment:
      TOKEN: dso://app/token
networks:
  fixed:
    ipam: {config: [{subnet: 10.231.7.0/24}]}
`})
	project = testbed.Project(t, dir)
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	staticAddr := serviceAddr(t, project, "static")
	waitFor(t, "the value at the static address", func() bool { return tryGet(staticAddr, "/env/TOKEN") == "j2" })
	u.must("", []byte("j3"), "dso", "secret", "set", "app/token")
	waitServes(t, u, "static", staticAddr, "j3")
	waitFor(t, "one static container", func() bool {
		ok, _ := clean(t, project, project+"-static-1", project+"-static-dso-proxy-1")
		return ok
	})
	if ip := testbed.ContainerIP(t, project+"-static-1", project+"_fixed").String(); ip != "10.231.7.10" {
		t.Errorf("after the rotation static is at %s, want its own address 10.231.7.10", ip)
	}
}

// waitServes waits until service serves want at addr's /env/TOKEN, and
// fails with the agent's status (its rotations) if it does not within 60 s.
func waitServes(t *testing.T, u *user, service, addr, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for tryGet(addr, "/env/TOKEN") != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s does not serve the new value; the agent says:\n%s", service, u.must("", nil, "dso", "status").stdout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestAnonymousVolumesKept: a service's anonymous volumes (compose's
// `volumes: ["/data"]`, an image's VOLUME, as postgres declares its data
// directory) go to the new container, as compose keeps them when it
// recreates one: what the old container wrote is still there after the
// rotation, in the same volume.
func TestAnonymousVolumesKept(t *testing.T) {
	u := newUser(t)
	volumeImage := testbed.TestappImageWith(t, "testapp-volume", "VOLUME /data\n")
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  anon:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    volumes: ["/data"]
    environment:
      TOKEN: dso://app/token
  imagevol:
    image: ` + volumeImage + `
    ports: ["127.0.0.1::8080"]
    environment:
      TOKEN: dso://app/token
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": []byte("a0")})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	services := []string{"anon", "imagevol"}
	addrs, volumes := map[string]string{}, map[string]string{}
	for _, svc := range services {
		addrs[svc] = serviceAddr(t, project, svc)
		waitFor(t, "the first value of "+svc, func() bool { return tryGet(addrs[svc], "/env/TOKEN") == "a0" })
		volumes[svc] = dataVolume(t, project+"-"+svc+"-1")
		mountpoint, err := testbed.Docker(t).VolumeInspect(t.Context(), volumes[svc], client.VolumeInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mountpoint.Volume.Mountpoint, "x"), []byte("written by "+svc), 0o644); err != nil {
			t.Fatalf("writing into %s's volume (needs root): %v", svc, err)
		}
		if got := tryGet(addrs[svc], "/file?path=/data/x"); got != "written by "+svc {
			t.Fatalf("%s reads %q from its volume before the rotation", svc, got)
		}
	}
	u.must("", []byte("a1"), "dso", "secret", "set", "app/token")
	for _, svc := range services {
		waitFor(t, "the new value of "+svc, func() bool { return tryGet(addrs[svc], "/env/TOKEN") == "a1" })
		waitFor(t, "one "+svc+" container", func() bool {
			return len(containerStates(t, project)) == 4 && containerStates(t, project)[project+"-"+svc+"-1"] == "running"
		})
		if got := tryGet(addrs[svc], "/file?path=/data/x"); got != "written by "+svc {
			t.Errorf("after the rotation %s reads %q from /data/x, want what the old container had", svc, got)
		}
		if v := dataVolume(t, project+"-"+svc+"-1"); v != volumes[svc] {
			t.Errorf("after the rotation %s's /data is volume %s, want %s", svc, v, volumes[svc])
		}
	}
	// down -v removes the anonymous volumes, as compose says: the engine
	// would leave those the replacements took by name.
	u.must(dir, nil, "dso", "down", "-v", "-p", project)
	for svc, v := range volumes {
		if _, err := testbed.Docker(t).VolumeInspect(t.Context(), v, client.VolumeInspectOptions{}); err == nil {
			t.Errorf("docker dso down -v left %s's anonymous volume %s", svc, v)
		}
	}
}

// dataVolume is the name of the volume at /data in container name.
func dataVolume(t *testing.T, name string) string {
	t.Helper()
	ins, err := testbed.Docker(t).ContainerInspect(t.Context(), name, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ins.Container.Mounts {
		if m.Destination == "/data" {
			return m.Name
		}
	}
	t.Fatalf("%s has no volume at /data", name)
	return ""
}

// TestRotationKeepsTheImage: a rotation changes the secrets, not the
// application: when the service's image name was moved to another image
// since `up` (a pull or a build without an up), the new container runs the
// image the old one ran.
func TestRotationKeepsTheImage(t *testing.T) {
	u := newUser(t)
	first := testbed.TestappImage(t)
	other := testbed.TestappImageWith(t, "testapp-other", "LABEL other=1\n")
	docker := testbed.Docker(t)
	tag := first + "-moving"
	if _, err := docker.ImageTag(t.Context(), client.ImageTagOptions{Source: first, Target: tag}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker.ImageRemove(context.Background(), tag, client.ImageRemoveOptions{Force: true}) })
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  web:
    image: ` + tag + `
    ports: ["127.0.0.1::8080"]
    environment:
      TOKEN: dso://app/token
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": []byte("i0")})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	addr := serviceAddr(t, project, "web")
	waitFor(t, "the first value", func() bool { return tryGet(addr, "/env/TOKEN") == "i0" })
	before, err := docker.ContainerInspect(t.Context(), project+"-web-1", client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := docker.ImageTag(t.Context(), client.ImageTagOptions{Source: other, Target: tag}); err != nil {
		t.Fatal(err)
	}
	u.must("", []byte("i1"), "dso", "secret", "set", "app/token")
	waitServes(t, u, "web", addr, "i1")
	waitFor(t, "one web container", func() bool {
		ok, _ := clean(t, project, project+"-web-1", project+"-web-dso-proxy-1")
		return ok
	})
	after, err := docker.ContainerInspect(t.Context(), project+"-web-1", client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Container.ID == before.Container.ID || after.Container.Image != before.Container.Image {
		t.Errorf("after the rotation web runs image %s (container %.12s), want the old container's %s", after.Container.Image, after.Container.ID, before.Container.Image)
	}
}

// TestAgentBoundPortQueuesEarlyClients: a fixed host port of a proxy is
// bound by the agent (root's, the engine local) when `create` registers
// the project, before anything starts: a client that connects then waits
// in the socket's backlog and is served once the project starts, instead
// of being refused; `docker dso ps` lists the port, and /metrics counts
// its connections, in one series though the port is also the one the proxy
// listens on in its container (the application listens on it too). The
// label dso.proxy.scheduling: batch puts the proxy's event loops under
// SCHED_BATCH in its container (no capability, the engine's seccomp
// profile), and a rotation behind it goes as any.
func TestAgentBoundPortQueuesEarlyClients(t *testing.T) {
	u := newUser(t)
	port := freePort(t)
	dir := writeProject(t, map[string]string{
		"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1:` + port + `:` + port + `"]
    labels: {dso.proxy.scheduling: batch}
    environment:
      TESTAPP_ADDR: ":` + port + `"
      TOKEN: dso://app/token
`,
		"dso.yaml": "providers:\n  local: {type: local}\nagent:\n  api:\n    open: [metrics]\n"})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": []byte("early")})
	ag := startAgent(t, u, filepath.Join(dir, "dso.yaml"))
	u.must(dir, nil, "dso", "compose", "create", "-p", project)
	addr := "127.0.0.1:" + port
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connecting to %s after create: %v (the agent binds it at the registration)", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(90 * time.Second))
	if _, err := io.WriteString(c, "GET /env/TOKEN HTTP/1.1\r\nHost: early\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the client that connected before the start got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "early" {
		t.Fatalf("the early client got %d %q, want 200 early", resp.StatusCode, body)
	}
	if ps := u.must(dir, nil, "dso", "ps", "-p", project); !strings.Contains(ps.stdout, addr+"->"+port+"/tcp") {
		t.Errorf("docker dso ps does not list %s:\n%s", addr, ps.stdout)
	}
	if n := testbed.SchedPolicies(t, inspect(t, serviceContainer(t, project, "api-dso-proxy")).State.Pid)[testbed.SchedBatch]; n != runtime.NumCPU() {
		t.Errorf("the proxy runs %d threads under SCHED_BATCH, want one event loop per CPU (%d)", n, runtime.NumCPU())
	}
	code, metrics := ag.get(t, "/metrics")
	series := `dso_proxy_connections_accepted_total{port="` + port + `",project="` + project + `",service="api"} 1`
	if code != http.StatusOK || strings.Count(metrics, series) != 1 {
		t.Errorf("GET /metrics = %d, want 200 with %s once:\n%s", code, series, grepLines(metrics, "dso_proxy"))
	}
	// A rotation: /metrics has the switch's time and the drain's result.
	u.must("", []byte("later"), "dso", "secret", "set", "app/token")
	waitFor(t, "the new value at "+addr, func() bool { return tryGet(addr, "/env/TOKEN") == "later" })
	_, metrics = ag.get(t, "/metrics")
	if strings.Contains(metrics, "dso_proxy_switch_seconds_count 0\n") {
		t.Errorf("/metrics after a rotation counts no switch:\n%s", grepLines(metrics, "dso_proxy"))
	}
	for _, want := range []string{
		"dso_proxy_switch_seconds_count",
		`dso_proxy_drained_connections_total{outcome="drained"}`,
		`dso_proxy_bytes_total{direction="to_client",port="` + port + `",project="` + project + `",service="api"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics after a rotation has no %s:\n%s", want, grepLines(metrics, "dso_proxy"))
		}
	}
}

// autoSchedulingFollowsLoad: the event loops of a proxy (process pid)
// with no label dso.proxy.scheduling (auto) keep the normal policy while
// the proxy is idle, move to SCHED_BATCH under 64 connections of small
// requests to addr, and go back to the normal policy once those end.
func autoSchedulingFollowsLoad(t *testing.T, addr string, pid int) {
	t.Helper()
	batch := func() int { return testbed.SchedPolicies(t, pid)[testbed.SchedBatch] }
	if n := batch(); n != 0 {
		t.Fatalf("the idle proxy runs %d threads under SCHED_BATCH, want none", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var served atomic.Int64
	for range 64 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Go(func() {
			r := bufio.NewReader(c)
			for ctx.Err() == nil {
				c.SetDeadline(time.Now().Add(clientTimeout))
				if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: load\r\n\r\n"); err != nil {
					return
				}
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				served.Add(1)
			}
		})
	}
	start := time.Now()
	waitFor(t, "the proxy's event loops under SCHED_BATCH, busy", func() bool { return batch() > 0 })
	cancel()
	wg.Wait()
	t.Logf("SCHED_BATCH after %v of load, %d requests served", time.Since(start).Round(time.Millisecond), served.Load())
	waitFor(t, "the proxy's event loops back to the normal policy, idle", func() bool { return batch() == 0 })
}

// peer asks the testapp at addr, on a new connection, where the
// connection came from; "" when it does not answer.
func peer(addr string) string {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/peer")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestProxyRestartRefusesNoClient: the agent keeps the host port it handed
// to a proxy, so that a restart of the proxy (docker restart, or its
// process killed and Docker restarting it) refuses no client: those that
// connect meanwhile wait in the socket's backlog and the restarted proxy
// serves them. An agent restarted since takes a copy from the proxy. A
// proxy stopped for good frees its port once the agent's hold ends.
//
// The agent also supplies the proxy with host sockets: the application
// sees its connections come from the project network's gateway, the host,
// as behind Docker's own published ports. Without the agent the supply
// runs out and the proxy connects from its own address, serving everyone;
// a new agent supplies it again. Its event loops, under the default
// scheduling (auto), move to SCHED_BATCH under load and back when idle.
func TestProxyRestartRefusesNoClient(t *testing.T) {
	u := newUser(t)
	port := freePort(t)
	dir := writeProject(t, map[string]string{
		"compose.yaml": `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1:` + port + `:8080"]
    environment:
      TOKEN: dso://app/token
`,
		"dso.yaml": "providers:\n  local: {type: local}\n"})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": []byte("one")})
	u.must(dir, nil, "dso", "up", "-p", project, "-d")
	addr := "127.0.0.1:" + port
	waitFor(t, "the app at "+addr, func() bool { return tryGet(addr, "/env/TOKEN") == "one" })
	proxyID := serviceContainer(t, project, "api-dso-proxy")
	if len(inspect(t, proxyID).HostConfig.PortBindings) > 0 {
		t.Fatalf("Docker publishes the proxy's port: the agent was to bind it")
	}
	logsOnFailure(t, u, proxyID)
	autoSchedulingFollowsLoad(t, addr, inspect(t, proxyID).State.Pid)
	var gateway, own string
	for _, ep := range inspect(t, proxyID).NetworkSettings.Networks {
		gateway, own = ep.Gateway.String(), ep.IPAddress.String()
	}
	waitFor(t, "the app seeing connections from the host ("+gateway+")", func() bool { return peer(addr) == gateway })

	l := startLoad(t, addr, "/env/TOKEN", 4, false)
	served := func(what string) {
		t.Helper()
		n := l.done()
		waitFor(t, "requests served after "+what, func() bool { return l.done() > n+20 })
	}
	served("the start")
	u.must(dir, nil, "restart", proxyID)
	served("docker restart")
	before := inspect(t, proxyID).RestartCount
	pid := inspect(t, proxyID).State.Pid
	killedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Docker restarting the killed proxy", func() bool {
		c := inspect(t, proxyID)
		return c.RestartCount > before && c.State.Running
	})
	served("the proxy's process was killed")
	// The requests the killed process was forwarding die with it.
	if cut := l.excuseCut(killedAt); len(cut) > 0 {
		t.Logf("requests under way when the proxy's process was killed, cut with it: %s", strings.Join(cut, "; "))
	}
	// An agent started after the hand-over takes copies from the proxy,
	// so a restart of the proxy refuses no client either.
	killLocalAgent(t, u)
	waitFor(t, "the app seeing connections from the proxy's own address ("+own+") once the host sockets ran out", func() bool {
		return peer(addr) == own
	})
	served("the host sockets ran out")
	startLocalAgent(t, u, filepath.Join(dir, "dso.yaml"))
	waitFor(t, "the new agent keeping a copy of the port", func() bool {
		return strings.Contains(agentLog(t, u), `"msg":"kept copies of the host ports the proxy listens on","proxy":"`+proxyID[:12])
	})
	waitFor(t, "the app seeing connections from the host again", func() bool { return peer(addr) == gateway })
	u.must(dir, nil, "restart", proxyID)
	served("docker restart after the agent's restart")
	waitFor(t, "the restarted proxy's connections coming from the host", func() bool { return peer(addr) == gateway })
	l.finish(t)

	// Stopped for good: after the hold, the port refuses.
	u.must(dir, nil, "stop", proxyID)
	waitFor(t, "the port refusing after the hold", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	})
}
