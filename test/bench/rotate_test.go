package bench

// BenchmarkRotate: one service (the testapp image) holds one secret of the
// local vault, behind 127.0.0.1:PORT (its own published port under
// restart, its proxy's under rolling):
//
//	go test -run '^$' -bench BenchmarkRotate -benchtime 7x -timeout 30m ./test/bench/
//
// Each round stores a new value with `docker dso secret set` and times,
// from the start of that command, until the app answers GET /env/TOKEN
// with it (change-to-serving-s, the median of the rounds: detection,
// coalescing and the swap included). The floor is measured in the same
// run, alternating with the rounds: `docker run -d` of the same image with
// a published port until it answers (docker-run-floor-s, median). The
// ratio is change-to-serving / floor; targets: rolling <= 1.5, restart <= 2.
// Between rounds, untimed, it waits for the rotation to finish.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/testbed"
)

func BenchmarkRotate(b *testing.B) {
	for _, strategy := range []string{"rolling", "restart"} {
		b.Run(strategy, func(b *testing.B) { benchRotate(b, strategy) })
	}
}

func benchRotate(b *testing.B, strategy string) {
	u := newUser(b)
	port := freePort(b)
	first := random(b)
	u.initVault(b, map[string][]byte{"bench/token": first})
	dir := b.TempDir()
	image := testbed.TestappImage(b)
	compose := fmt.Sprintf(`services:
  api:
    image: %s
    ports: ["127.0.0.1:%d:8080"]
    labels:
      dso.update.strategy: %s
    environment:
      TOKEN: dso://bench/token
`, image, port, strategy)
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(compose), 0o644); err != nil {
		b.Fatal(err)
	}
	project := testbed.Project(b, dir)
	if r := u.run(dir, "dso", "up", "-p", project, "-d"); r.code != 0 {
		b.Fatalf("docker dso up: exit %d\n%s", r.code, r.out)
	}
	// A new connection per request: what a new client sees (a kept-alive
	// connection stays on the old container until the drain ends it).
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	waitValue := func(url string, want []byte) {
		b.Helper()
		deadline := time.Now().Add(readyWithin)
		for {
			if got, ok := get(b.Context(), hc, url); ok && (want == nil || got == string(want)) {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s did not answer within %v", url, readyWithin)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/env/TOKEN", port)
	waitValue(url, first)
	var served, floor, netFloor []timing
	for i := 0; b.Loop(); i++ {
		floor = append(floor, timing{up: dockerRun(b, image, "", func(url string) { waitValue(url, nil) })})
		netFloor = append(netFloor, timing{up: dockerRun(b, image, project+"_default", func(url string) { waitValue(url, nil) })})
		v := random(b)
		start := time.Now()
		if r := u.runIn("", v, "dso", "secret", "set", "bench/token"); r.code != 0 {
			b.Fatalf("docker dso secret set: exit %d\n%s", r.code, r.out)
		}
		waitValue(url, v)
		served = append(served, timing{up: time.Since(start)})
		b.Logf("round %d: change -> serving %v; docker run -> serving %v (on the project's network %v)", i+1, served[i].up.Round(time.Millisecond), floor[i].up.Round(time.Millisecond), netFloor[i].up.Round(time.Millisecond))
		waitRotations(b, u, i+1)
	}
	s, f, nf := median(served, timing.upOf), median(floor, timing.upOf), median(netFloor, timing.upOf)
	b.ReportMetric(s.Seconds(), "change-to-serving-s")
	b.ReportMetric(f.Seconds(), "docker-run-floor-s")
	b.ReportMetric(s.Seconds()/f.Seconds(), "ratio-to-floor")
	b.ReportMetric(nf.Seconds(), "docker-run-project-network-s")
	b.ReportMetric(s.Seconds()/nf.Seconds(), "ratio-to-network-floor")
	b.ReportMetric(0, "ns/op")
}

// dockerRun times `docker run -d` of image with a published port (on
// network, "" for the default) until wait returns, then removes the
// container (untimed).
func dockerRun(b *testing.B, image, network string, wait func(url string)) time.Duration {
	b.Helper()
	port := freePort(b)
	name := fmt.Sprintf("dso-bench-floor-%d", port)
	args := []string{"run", "-d", "--name", name, "-p", fmt.Sprintf("127.0.0.1:%d:8080", port), "-e", "TOKEN=floor"}
	if network != "" {
		args = append(args, "--network", network)
	}
	start := time.Now()
	out, err := exec.Command("docker", append(args, image)...).CombinedOutput()
	if err != nil {
		b.Fatalf("docker run: %v\n%s", err, out)
	}
	wait(fmt.Sprintf("http://127.0.0.1:%d/env/TOKEN", port))
	took := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exec.CommandContext(ctx, "docker", "rm", "-f", name).Run()
	return took
}
