// Package bench measures whole dso commands against the real Docker engine
// and real Compose v2, next to what they replace.
//
// BenchmarkUp compares `docker dso up -d` with `docker compose up -d` on the
// same project, 10 services of the testapp image with 5 secrets each: dso
// resolves dso:// references, plain compose gets literal dummy values. Run
// it with (one iteration is one round of each, in alternating order, each
// followed by an untimed down):
//
//	go test -run '^$' -bench BenchmarkUp -benchtime 7x -timeout 30m ./test/bench/
//
// It reports the medians of the wall time of the `up` command (dso-up-s,
// compose-up-s) and their ratio (up-ratio, target <= 1.15), the medians of
// the time from `up` start to the last service answering GET /env/S4 with
// its value (dso-ready-s, compose-ready-s) and their ratio (ready-ratio),
// and the first `docker dso up`, which also starts the local agent
// (first-dso-up-s), and the median of `docker dso up --dry-run`, the work
// dso does before compose runs (dso-plan-s). -v prints every round.
//
// It needs Docker and Compose v2 (scripts/test.sh installs it); without an
// engine it is skipped, or fails under CI. `go test ./...` does not run
// benchmarks.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/testbed"
)

const (
	services    = 10
	perService  = 5
	readyWithin = 2 * time.Minute
)

// BenchmarkUp: see the package comment.
func BenchmarkUp(b *testing.B) {
	u := newUser(b)
	image := testbed.TestappImage(b)
	ports := make([]int, services)
	for i := range ports {
		ports[i] = freePort(b)
	}

	// values[svc][var] is what service svc must see in S<var>.
	secrets := map[string][]byte{}
	var dsoValues, plainValues [services][perService]string
	for s := range services {
		for v := range perService {
			value := random(b)
			secrets[fmt.Sprintf("bench/svc%d/s%d", s, v)] = value
			dsoValues[s][v] = string(value)
			plainValues[s][v] = fmt.Sprintf("dummy-svc%d-s%d-0123456789abcdef0123456789abcdef", s, v)
		}
	}
	u.initVault(b, secrets)

	dso := &project{user: u, ports: ports, dso: true}
	dso.dir = writeCompose(b, image, ports, func(s, v int) string { return fmt.Sprintf("dso://bench/svc%d/s%d", s, v) })
	dso.name = testbed.Project(b, dso.dir)
	dso.values = dsoValues
	plain := &project{user: u, ports: ports}
	plain.dir = writeCompose(b, image, ports, func(s, v int) string { return plainValues[s][v] })
	plain.name = testbed.Project(b, plain.dir)
	plain.values = plainValues

	// Warm-up, apart: the first dso up also starts the local agent.
	first := dso.round(b)
	plain.round(b)
	b.Logf("first docker dso up (starting the agent): up %v, ready %v", first.up.Round(time.Millisecond), first.ready.Round(time.Millisecond))

	var dsoRuns, plainRuns, plans []timing
	for i := 0; b.Loop(); i++ {
		order := []*project{dso, plain}
		if i%2 == 1 {
			order = []*project{plain, dso}
		}
		for _, p := range order {
			t := p.round(b)
			if p.dso {
				dsoRuns = append(dsoRuns, t)
			} else {
				plainRuns = append(plainRuns, t)
			}
			b.Logf("round %d %-7s up %7v  ready %7v", i+1, p.kind(), t.up.Round(time.Millisecond), t.ready.Round(time.Millisecond))
		}
		plans = append(plans, dso.plan(b))
	}
	dsoUp, plainUp := median(dsoRuns, timing.upOf), median(plainRuns, timing.upOf)
	dsoReady, plainReady := median(dsoRuns, timing.readyOf), median(plainRuns, timing.readyOf)
	b.ReportMetric(dsoUp.Seconds(), "dso-up-s")
	b.ReportMetric(plainUp.Seconds(), "compose-up-s")
	b.ReportMetric(dsoUp.Seconds()/plainUp.Seconds(), "up-ratio")
	b.ReportMetric(dsoReady.Seconds(), "dso-ready-s")
	b.ReportMetric(plainReady.Seconds(), "compose-ready-s")
	b.ReportMetric(dsoReady.Seconds()/plainReady.Seconds(), "ready-ratio")
	b.ReportMetric(first.up.Seconds(), "first-dso-up-s")
	b.ReportMetric(median(plans, timing.upOf).Seconds(), "dso-plan-s")
	b.ReportMetric(0, "ns/op")
}

// timing is one measured `up`.
type timing struct{ up, ready time.Duration }

func (t timing) upOf() time.Duration    { return t.up }
func (t timing) readyOf() time.Duration { return t.ready }

func median(runs []timing, of func(timing) time.Duration) time.Duration {
	d := make([]time.Duration, len(runs))
	for i, r := range runs {
		d[i] = of(r)
	}
	slices.Sort(d)
	if len(d) == 0 {
		return 0
	}
	if len(d)%2 == 1 {
		return d[len(d)/2]
	}
	return (d[len(d)/2-1] + d[len(d)/2]) / 2
}

// project is one of the two projects compared.
type project struct {
	user   *user
	dir    string
	name   string
	dso    bool
	ports  []int
	values [services][perService]string
}

func (p *project) kind() string {
	if p.dso {
		return "dso"
	}
	return "compose"
}

// round runs `up -d`, times it and the wait until every service answers
// with its last value, checks every value, then takes the project down.
func (p *project) round(b *testing.B) timing {
	b.Helper()
	args := []string{"compose", "-p", p.name, "up", "-d"}
	if p.dso {
		args = []string{"dso", "up", "-p", p.name, "-d"}
	}
	ctx, cancel := context.WithTimeout(b.Context(), readyWithin)
	defer cancel()
	start := time.Now()
	ready := make(chan error, 1)
	go func() { ready <- p.waitReady(ctx) }()
	r := p.user.run(p.dir, args...)
	up := time.Since(start)
	if r.code != 0 {
		cancel()
		<-ready
		b.Fatalf("docker %s: exit %d\n%s", strings.Join(args, " "), r.code, r.out)
	}
	if err := <-ready; err != nil {
		b.Fatalf("%s project: %v", p.kind(), err)
	}
	t := timing{up: up, ready: time.Since(start)}
	p.check(b)
	if r := p.user.run(p.dir, "compose", "-p", p.name, "down"); r.code != 0 {
		b.Fatalf("docker compose down: exit %d\n%s", r.code, r.out)
	}
	return t
}

// plan times `docker dso up --dry-run`: what dso does before it hands over
// to compose (load the project and dso.yaml, fetch every reference, inspect
// the images, compute the override), with no container made.
func (p *project) plan(b *testing.B) timing {
	b.Helper()
	start := time.Now()
	if r := p.user.run(p.dir, "dso", "up", "-p", p.name, "-d", "--dry-run"); r.code != 0 {
		b.Fatalf("docker dso up --dry-run: exit %d\n%s", r.code, r.out)
	}
	return timing{up: time.Since(start)}
}

// waitReady polls every service until it answers GET /env/S<last> with its
// value.
func (p *project) waitReady(ctx context.Context) error {
	hc := &http.Client{Timeout: time.Second}
	var wg sync.WaitGroup
	errs := make([]error, services)
	for s := range services {
		wg.Go(func() {
			url := fmt.Sprintf("http://127.0.0.1:%d/env/S%d", p.ports[s], perService-1)
			want := p.values[s][perService-1]
			for {
				if got, ok := get(ctx, hc, url); ok && got == want {
					return
				}
				select {
				case <-ctx.Done():
					errs[s] = fmt.Errorf("service svc%d did not answer with its value in time", s)
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// check requires every variable of every service to hold its value.
func (p *project) check(b *testing.B) {
	b.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	for s := range services {
		for v := range perService {
			got, ok := get(b.Context(), hc, fmt.Sprintf("http://127.0.0.1:%d/env/S%d", p.ports[s], v))
			if !ok || got != p.values[s][v] {
				b.Fatalf("%s project: service svc%d, S%d does not hold its value (%d bytes)", p.kind(), s, v, len(got))
			}
		}
	}
}

// get returns the body of a 200 answer.
func get(ctx context.Context, hc *http.Client, url string) (string, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err == nil && resp.StatusCode == http.StatusOK
}

// writeCompose writes the 10-service project, value(s, v) giving the value
// of S<v> in service svc<s>, into a new directory.
func writeCompose(b *testing.B, image string, ports []int, value func(s, v int) string) string {
	b.Helper()
	var y strings.Builder
	y.WriteString("services:\n")
	for s := range services {
		fmt.Fprintf(&y, "  svc%d:\n    image: %s\n    ports: [\"127.0.0.1:%d:8080\"]\n    environment:\n", s, image, ports[s])
		for v := range perService {
			fmt.Fprintf(&y, "      S%d: %q\n", v, value(s, v))
		}
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(y.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// user is an isolated user of dso: its own HOME (vault, agent) and docker
// config with the plugins installed as scripts/install.sh installs them.
type user struct {
	home string
	env  []string
}

func newUser(b *testing.B) *user {
	b.Helper()
	testbed.Docker(b)
	home := b.TempDir()
	plugins := filepath.Join(home, ".docker", "cli-plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		b.Fatal(err)
	}
	for name, pkg := range map[string]string{"docker-dso": "./cmd/docker-dso", "dso-init": "./cmd/dso-init"} {
		bin, err := os.ReadFile(testbed.GoBinary(b, pkg))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(plugins, name), bin, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.Symlink(testbed.ComposeBinary(b), filepath.Join(plugins, "docker-compose")); err != nil {
		b.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "HOME" || name == "DOCKER_CONFIG" || strings.HasPrefix(name, "DSO_") || strings.HasPrefix(name, "COMPOSE_") {
			continue
		}
		env = append(env, kv)
	}
	u := &user{home: home, env: append(env, "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"))}
	b.Cleanup(func() { u.run("", "dso", "agent", "stop") })
	return u
}

type result struct {
	out  string
	code int
}

// run runs `docker ARGS...` in dir.
func (u *user) run(dir string, args ...string) result {
	return u.runIn(dir, nil, args...)
}

func (u *user) runIn(dir string, stdin []byte, args ...string) result {
	cmd := exec.Command("docker", args...)
	cmd.Env, cmd.Dir = u.env, dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return result{out: string(out), code: ee.ExitCode()}
	case err != nil:
		return result{out: err.Error(), code: -1}
	}
	return result{out: string(out)}
}

// initVault creates the user's vault and stores secrets in it.
func (u *user) initVault(b *testing.B, secrets map[string][]byte) {
	b.Helper()
	if r := u.run("", "dso", "init"); r.code != 0 {
		b.Fatalf("docker dso init: exit %d\n%s", r.code, r.out)
	}
	for name, value := range secrets {
		if r := u.runIn("", value, "dso", "secret", "set", name); r.code != 0 {
			b.Fatalf("docker dso secret set %s: exit %d\n%s", name, r.code, r.out)
		}
	}
}

func random(b *testing.B) []byte {
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		b.Fatal(err)
	}
	return []byte("bench-" + hex.EncodeToString(buf))
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(b *testing.B) int {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
