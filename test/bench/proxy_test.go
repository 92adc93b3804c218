package bench

// BenchmarkProxy measures the proxy that owns a rolling service's host
// ports (internal/proxy, run as `dso-init proxy` in its own container)
// side by side with what it competes with, in one run, against one backend
// container (the testapp image) on a user network:
//
//	go test -run '^$' -bench BenchmarkProxy -benchtime 1x -timeout 20m ./test/bench/
//
// DSO_BENCH_PROXY_PATHS (a comma-separated list of the paths below, such
// as dso-bound,haproxy) measures those paths only, besides direct, for
// quicker comparisons. DSO_BENCH_PROXY_BUSY=N runs N processes that never
// sleep (a shell's endless loop) meanwhile, as on a host whose CPUs other
// work keeps busy: in a CPU group of their own, as a host that gives each
// service its own (systemd, the engine) does, or with N,origin in the
// group the benchmark started in (the root on a host without systemd).
//
// Paths, each measured from the host:
//   - direct: the container's IP, no proxy (the baseline of every ratio);
//   - docker-proxy: the container's port published on 127.0.0.1, which
//     Docker's userland proxy serves here;
//   - haproxy: HAProxy 2.6 (Debian's haproxy, scripts/tools/haproxy.sh) in
//     mode tcp on the host, forwarding to the container's IP;
//   - haproxy-net: the same HAProxy in a container on the backend's
//     network, forwarding to the backend by its name, reached at its
//     container's IP: HAProxy where our proxy container stands, to compare
//     with dso;
//   - dso: our proxy container's IP, as clients from other hosts reach it
//     (the engine's DNAT leads them to the proxy container, with no
//     userland hop);
//   - dso+docker-proxy: our proxy container's port published on 127.0.0.1,
//     as a client on the host's loopback reaches it (docker-proxy, then ours);
//   - dso-bound: our proxy container serving a socket bound on 127.0.0.1 of
//     the host and handed to it, as the agent does (socket activation,
//     internal/agent/hostports.go), and supplied with host sockets for its
//     connections to the backend, as the agent does too
//     (internal/agent/hostsockets.go): how clients reach a proxy whose host
//     ports the agent binds, from the host or from other hosts;
//   - dso-bound-own: dso-bound without the host sockets: the proxy connects
//     from its container, across the bridge (how dso-bound ran before, and
//     runs while no agent supplies it);
//   - dso-bound-normal: dso-bound with the label dso.proxy.scheduling:
//     normal (`dso-init proxy --scheduling normal`): the proxy's event
//     loops keep the normal policy, where by default (auto) a busy loop
//     moves to SCHED_BATCH;
//   - dso-bound-batch: dso-bound with the label dso.proxy.scheduling:
//     batch: the proxy's event loops under SCHED_BATCH all the time;
//   - dso-hostnet: our proxy container in the host's network namespace
//     (network_mode host), forwarding to the container's IP: the container
//     without the extra hop over the bridge that dso-bound's leg to the
//     backend takes;
//   - dso-host: the same `dso-init proxy` run on the host, where HAProxy and
//     docker-proxy run: our code in their position, as a process of the
//     host rather than in a container.
//
// Figures: one bulk stream of 1 GiB (GET /bytes, MB/s, the best of 3 runs
// per path, runs interleaved); 64 concurrent keep-alive connections doing
// small request/response pairs (GET /healthz) in rrRounds rounds of
// rrDuration, every path once a round, in turn: requests/s, the median
// rate, and each ratio the median of the rounds' ratios (the machine's
// speed drifts by more than the differences measured from one run of a
// few seconds to the next); and, over all rounds, the proxy's CPU time per
// request (how much work the proxy costs, which the machine's noise moves
// least), the backend's CPU time and sleeps per request, "app cpu" and
// "app sleeps" (the backend is the party whose share of the CPUs runs out
// first, and what a request costs it depends on the proxy in front of it,
// through how often it runs out of work and waits to be woken), the same
// of the client, "client cpu" and "c. sleeps", whose work too is the same
// on every path, the proxy's sleeps per request, "p. sleeps" (each one is
// a wake-up its client or backend pays for when it next writes), and the
// share of the machine's CPU time left idle, "idle" (the parties need more
// than the two CPUs, so idle time is work waiting on one of them); each of
// our paths' rate is also logged as a ratio to HAProxy's and to
// docker-proxy's, the median of the rounds' ratios, with their range; and
// the latency of one connection doing 2,000 sequential pairs (p50, p99),
// and of 1,000 sequential new connections doing one pair each (connect
// p50, p99: what a client that connects per request sees). Each
// throughput is printed as a ratio to direct (-x), each latency as the
// time added to direct's. The client, the backend and the proxies each
// run in a CPU group of their own (cpugroups_test.go), so that every proxy
// competes for the two CPUs as the others do. Targets: dso >= docker-proxy, dso >= haproxy, and dso >=
// 0.5x direct. The machine is shared: compare figures of one run only.

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/agent"
	"github.com/dso-project/dso/internal/proxy"
	"github.com/dso-project/dso/internal/proxy/control"
	"github.com/dso-project/dso/internal/testbed"
)

const (
	bulkBytes   = 1 << 30
	runs        = 3
	rrConns     = 64
	rrRounds    = 12
	rrDuration  = 1500 * time.Millisecond
	latencyReqs = 2000
	connectReqs = 1000
)

// proxyPath is one way to the backend and what was measured through it.
type proxyPath struct {
	name, addr string
	bulk       float64   // MB/s, best run
	rates      []float64 // requests/s, one a round
	// What the rounds' requests cost: the proxy's, the backend's and the
	// client's (the benchmark's process) CPU time and sleeps, and the
	// machine's CPU time left idle, over the time it took.
	requests                             int
	proxyCPU, appCPU, clientCPU          time.Duration
	proxySleeps, appSleeps, clientSleeps int
	idleTicks, totalTicks                uint64
	p50, p99                             time.Duration
	c50, c99                             time.Duration // a new connection per pair
}

// pathStart starts a path and returns its address.
type pathStart struct {
	name  string
	start func() string
}

// BenchmarkProxy: see above.
func BenchmarkProxy(b *testing.B) {
	groups := newCPUGroups(b)
	image := testbed.TestappImage(b)
	net := testbed.Network(b)
	app := testbed.RunContainer(b, client.ContainerCreateOptions{
		Config:           &container.Config{Image: image, ExposedPorts: network.PortSet{network.MustParsePort("8080/tcp"): {}}},
		HostConfig:       &container.HostConfig{PortBindings: testbed.PublishLocal("8080/tcp")},
		NetworkingConfig: testbed.OnNetwork(net, "app"),
	})
	appIP := testbed.ContainerIP(b, app, net).String()
	appAddr := appIP + ":8080"
	var proxy, proxyIP string // our proxy container on the network, started by the first path that needs it
	onNet := func() string {
		if proxy == "" {
			proxy = testbed.RunProxy(b, image, net, "app", []string{"80:8080"})
			proxyIP = testbed.ContainerIP(b, proxy, net).String()
			groups.container(b, "proxy", proxy)
			groups.dockerProxies(b, proxyIP)
		}
		return proxy
	}
	groups.container(b, "backend", app)
	groups.dockerProxies(b, appIP)
	if v := os.Getenv("DSO_BENCH_PROXY_BUSY"); v != "" {
		count, where, _ := strings.Cut(v, ",")
		n, err := strconv.Atoi(count)
		if err != nil || n < 0 || (where != "" && where != originGroup) {
			b.Fatalf("DSO_BENCH_PROXY_BUSY=%q: want a number of processes, then optionally \",origin\"", v)
		}
		for range n {
			startOnHost(b, groups, cmp.Or(where, "busy"), "/bin/sh", "-c", "while :; do :; done")
		}
	}
	starts := []pathStart{
		{"direct", func() string { return appAddr }},
		{"docker-proxy", func() string { return testbed.HostAddr(b, app, "8080/tcp") }},
		{"haproxy", func() string { return startHAProxy(b, groups, appAddr) }},
		{"haproxy-net", func() string { return runHAProxy(b, groups, net, "app:8080") }},
		{"dso", func() string { onNet(); return proxyIP + ":80" }},
		{"dso+docker-proxy", func() string { return testbed.HostAddr(b, onNet(), "80/tcp") }},
		{"dso-bound", func() string { return handOver(b, onNet(), 8080, true) }},
		{"dso-bound-own", func() string {
			id := testbed.RunProxy(b, image, net, "app", []string{"80:8080"})
			groups.container(b, "proxy", id)
			return handOver(b, id, 8080, false)
		}},
		{"dso-bound-normal", func() string {
			id := testbed.RunProxy(b, image, net, "app", []string{"80:8080"}, "--scheduling", "normal")
			groups.container(b, "proxy", id)
			return handOver(b, id, 8080, true)
		}},
		{"dso-bound-batch", func() string {
			id := testbed.RunProxy(b, image, net, "app", []string{"80:8080"}, "--scheduling", "batch")
			groups.container(b, "proxy", id)
			return handOver(b, id, 8080, true)
		}},
		{"dso-hostnet", func() string {
			port := strconv.Itoa(freePort(b))
			groups.container(b, "proxy", testbed.RunProxy(b, image, "host", appIP, []string{port + ":8080"}))
			return "127.0.0.1:" + port
		}},
		{"dso-host", func() string { return startDSOProxy(b, groups, appIP) }},
	}
	only := strings.FieldsFunc(os.Getenv("DSO_BENCH_PROXY_PATHS"), func(r rune) bool { return r == ',' || r == ' ' })
	for _, name := range only {
		if !slices.ContainsFunc(starts, func(s pathStart) bool { return s.name == name }) {
			b.Fatalf("DSO_BENCH_PROXY_PATHS: %q is not a path of the benchmark", name)
		}
	}
	var paths []*proxyPath
	for _, s := range starts {
		if s.name == "direct" || len(only) == 0 || slices.Contains(only, s.name) {
			paths = append(paths, &proxyPath{name: s.name, addr: s.start()})
		}
	}
	for _, p := range paths {
		testbed.HTTPGet(b, "http://"+p.addr+"/healthz") // waits until it answers
	}

	for b.Loop() {
		for run := range runs {
			for i := range paths {
				p := paths[(i+run)%len(paths)]
				p.bulk = max(p.bulk, bulk(b, p.addr))
			}
		}
		for round := range rrRounds {
			for i := range paths {
				p := paths[(i+round)%len(paths)]
				proxy0, psleeps0 := groups.usage(b, "proxy")
				app0, sleeps0 := groups.usage(b, "backend")
				client0, csleeps0 := groups.usage(b, "client")
				idle0, total0 := machineTicks(b)
				rps, n := requestsPerSecond(b, p.addr)
				idle1, total1 := machineTicks(b)
				proxy1, psleeps1 := groups.usage(b, "proxy")
				app1, sleeps1 := groups.usage(b, "backend")
				client1, csleeps1 := groups.usage(b, "client")
				p.rates = append(p.rates, rps)
				p.requests += n
				p.proxyCPU, p.appCPU, p.clientCPU = p.proxyCPU+proxy1-proxy0, p.appCPU+app1-app0, p.clientCPU+client1-client0
				p.proxySleeps, p.appSleeps, p.clientSleeps = p.proxySleeps+psleeps1-psleeps0, p.appSleeps+sleeps1-sleeps0, p.clientSleeps+csleeps1-csleeps0
				p.idleTicks, p.totalTicks = p.idleTicks+idle1-idle0, p.totalTicks+total1-total0
			}
		}
		for _, p := range paths {
			p.p50, p.p99 = latency(b, p.addr)
			p.c50, p.c99 = connectLatency(b, p.addr)
		}
	}

	direct := paths[0]
	us := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	b.Logf("%-17s %9s %7s %9s %7s %9s %9s %10s %10s %9s %9s %5s %9s %9s %11s %11s %11s %11s", "path", "bulk MB/s", "x", "req/s", "x", "cpu/req", "app cpu", "app sleeps", "client cpu", "c. sleeps", "p. sleeps", "idle",
		"p50", "p99", "p50 added", "p99 added", "connect p50", "c. p50 add")
	for _, p := range paths {
		x, _, _ := p.ratio(direct)
		b.Logf("%-17s %9.0f %6.2fx %9.0f %6.2fx %7.1fµs %7.1fµs %10.2f %8.1fµs %9.2f %9.2f %4.0f%% %9v %9v %11v %11v %11v %11v", p.name, p.bulk, p.bulk/direct.bulk, medianRate(p.rates), x,
			p.cpuPerReq(p.proxyCPU), p.cpuPerReq(p.appCPU), p.perReq(p.appSleeps), p.cpuPerReq(p.clientCPU), p.perReq(p.clientSleeps), p.perReq(p.proxySleeps), 100*p.idle(),
			us(p.p50), us(p.p99), us(p.p50-direct.p50), us(p.p99-direct.p99), us(p.c50), us(p.c50-direct.c50))
		if p == direct {
			b.ReportMetric(p.bulk, "direct-bulk-MB/s")
			b.ReportMetric(medianRate(p.rates), "direct-req/s")
			continue
		}
		b.ReportMetric(p.bulk/direct.bulk, p.name+"-bulk-x")
		b.ReportMetric(x, p.name+"-req-x")
		b.ReportMetric(p.cpuPerReq(p.proxyCPU), p.name+"-cpu-per-req-us")
		b.ReportMetric(p.cpuPerReq(p.appCPU), p.name+"-backend-cpu-per-req-us")
		b.ReportMetric(p.perReq(p.appSleeps), p.name+"-backend-sleeps-per-req")
		b.ReportMetric(p.cpuPerReq(p.clientCPU), p.name+"-client-cpu-per-req-us")
		b.ReportMetric(p.perReq(p.clientSleeps), p.name+"-client-sleeps-per-req")
		b.ReportMetric(p.perReq(p.proxySleeps), p.name+"-proxy-sleeps-per-req")
		b.ReportMetric(100*p.idle(), p.name+"-idle-pct")
		b.ReportMetric(float64((p.p50 - direct.p50).Microseconds()), p.name+"-p50-added-us")
		b.ReportMetric(float64((p.p99 - direct.p99).Microseconds()), p.name+"-p99-added-us")
		b.ReportMetric(float64((p.c50 - direct.c50).Microseconds()), p.name+"-connect-p50-added-us")
		b.ReportMetric(float64((p.c99 - direct.c99).Microseconds()), p.name+"-connect-p99-added-us")
	}
	for _, p := range paths {
		for _, q := range paths {
			if !strings.HasPrefix(p.name, "dso") || (q.name != "haproxy" && q.name != "docker-proxy") {
				continue
			}
			x, lo, hi := p.ratio(q)
			b.Logf("small requests, %s / %s: %.2fx (rounds %.2f-%.2fx)", p.name, q.name, x, lo, hi)
			b.ReportMetric(x, p.name+"-vs-"+q.name+"-req-x")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// cpuPerReq returns CPU time of the rounds per request, in µs.
func (p *proxyPath) cpuPerReq(d time.Duration) float64 {
	return float64(d) / float64(time.Microsecond) / float64(p.requests)
}

// perReq returns a count of the rounds (sleeps) per request.
func (p *proxyPath) perReq(n int) float64 { return float64(n) / float64(p.requests) }

// idle returns the share of the machine's CPU time left idle in the
// rounds.
func (p *proxyPath) idle() float64 { return float64(p.idleTicks) / float64(p.totalTicks) }

// ratio returns the median over the rounds of p's rate to q's in the same
// round, and the lowest and highest.
func (p *proxyPath) ratio(q *proxyPath) (med, lo, hi float64) {
	xs := make([]float64, len(p.rates))
	for i := range xs {
		xs[i] = p.rates[i] / q.rates[i]
	}
	return medianRate(xs), slices.Min(xs), slices.Max(xs)
}

// medianRate returns the median of xs: the mean of the middle two of an even
// count.
func medianRate(xs []float64) float64 {
	xs = slices.Sorted(slices.Values(xs))
	n := len(xs)
	return (xs[(n-1)/2] + xs[n/2]) / 2
}

// startHAProxy runs HAProxy in mode tcp on 127.0.0.1, forwarding to
// backend, until the benchmark ends, and returns its address.
func startHAProxy(b *testing.B, g *cpuGroups, backend string) string {
	b.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(b))
	startOnHost(b, g, "proxy", haproxyBinary(b), "-db", "-f", haproxyConfig(b, addr, backend))
	return addr
}

// haproxyBinary returns the path of Debian's HAProxy.
func haproxyBinary(b *testing.B) string {
	b.Helper()
	bin := os.Getenv("DSO_HAPROXY_BIN")
	if bin == "" {
		bin = "/usr/sbin/haproxy"
	}
	if _, err := os.Stat(bin); err != nil {
		testbed.Unavailable(b, "HAProxy is missing (%v); scripts/test.sh installs it (scripts/tools/haproxy.sh)", err)
	}
	return bin
}

// haproxyConfig writes a configuration of HAProxy in mode tcp listening
// on bind and forwarding to backend, and returns its path.
func haproxyConfig(b *testing.B, bind, backend string) string {
	b.Helper()
	cfg := filepath.Join(b.TempDir(), "haproxy.cfg")
	conf := fmt.Sprintf(`global
	maxconn 4096
defaults
	mode tcp
	timeout connect 5s
	timeout client 1m
	timeout server 1m
frontend bench
	bind %s
	default_backend app
backend app
	server app %s
`, bind, backend)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	return cfg
}

// runHAProxy runs the host's HAProxy in a container on the network named
// net, in the proxies' CPU group, listening on port 80 and forwarding to
// backend (resolved by Docker's DNS when it starts); it returns the
// container's address. The image holds the binary, the shared libraries
// ldd lists for it and the configuration, FROM scratch.
func runHAProxy(b *testing.B, g *cpuGroups, net, backend string) string {
	b.Helper()
	bin := haproxyBinary(b)
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		b.Fatalf("ldd %s: %v", bin, err)
	}
	files := map[string]string{"haproxy": bin, "haproxy.cfg": haproxyConfig(b, ":80", backend)}
	dockerfile := "FROM scratch\nCOPY haproxy /haproxy\nCOPY haproxy.cfg /haproxy.cfg\n"
	for _, line := range strings.Split(string(out), "\n") {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
		f := strings.Fields(line)
		lib := ""
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0]
		default:
			continue
		}
		name := fmt.Sprintf("lib%d", len(files))
		files[name] = lib // the file a symlink names: BuildImage copies contents
		dockerfile += "COPY " + name + " " + lib + "\n"
	}
	dockerfile += "ENTRYPOINT [\"/haproxy\", \"-db\", \"-f\", \"/haproxy.cfg\"]\n"
	image := testbed.BuildImage(b, "haproxy", files, dockerfile)
	id := testbed.RunContainer(b, client.ContainerCreateOptions{
		Config:           &container.Config{Image: image},
		NetworkingConfig: testbed.OnNetwork(net),
	})
	g.container(b, "proxy", id)
	return testbed.ContainerIP(b, id, net).String() + ":80"
}

// startDSOProxy runs `dso-init proxy` on the host, on 127.0.0.1 (its
// listeners take all addresses), forwarding to port 8080 of backend.
func startDSOProxy(b *testing.B, g *cpuGroups, backend string) string {
	b.Helper()
	port := strconv.Itoa(freePort(b))
	startOnHost(b, g, "proxy", testbed.GoBinary(b, "./cmd/dso-init"), "proxy", "--port", port+":8080",
		"--backend", backend, "--control", filepath.Join(b.TempDir(), "proxy.sock"))
	return "127.0.0.1:" + port
}

// handOver binds a port on 127.0.0.1 of the host and hands it to the proxy
// in container id, forwarding to target, as the agent does; with feed, it
// also keeps the proxy supplied with host sockets for its connections to
// the backend, as the agent does too (agent.Proxies.Feed). It returns the
// address.
func handOver(b *testing.B, id string, target int, feed bool) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ins, err := testbed.Docker(b).ContainerInspect(b.Context(), id, client.ContainerInspectOptions{})
	if err != nil {
		b.Fatal(err)
	}
	_, ok, err := control.Direct(b.Context(), ins.Container, proxy.Request{Op: proxy.OpListen, Targets: []int{target}, Files: []*os.File{f}})
	if !ok || err != nil {
		b.Fatalf("handing a socket to the proxy (the benchmark runs as root on the engine's host): handled %v, %v", ok, err)
	}
	if feed {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- (&agent.Proxies{Docker: testbed.Docker(b)}).Feed(ctx, id) }()
		b.Cleanup(func() {
			r, _, err := control.Direct(context.Background(), ins.Container, proxy.Request{Op: proxy.OpStats})
			if err != nil || r.Stats == nil {
				b.Errorf("the proxy's stats: %v", err)
			} else {
				var accepted uint64
				for _, ps := range r.Stats.Ports {
					accepted += ps.Accepted
				}
				b.Logf("proxy %.12s: %d of %d connections reached the backend from host sockets", id, r.Stats.HostConnections, accepted)
			}
			cancel()
			if err := <-done; err != nil {
				b.Errorf("supplying the proxy with host sockets: %v", err)
			}
		})
	}
	return ln.Addr().String()
}

// startOnHost runs bin on the host, in the CPU group named group, until
// the benchmark ends.
func startOnHost(b *testing.B, g *cpuGroups, group, bin string, args ...string) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting %s: %v", bin, err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Run under nice, the benchmark's children inherit its priority; put
	// them back at the engine's (docker-proxy and the containers run at 0),
	// or they would lose for that alone. Needs root.
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, 0); err != nil {
		b.Logf("%s keeps the benchmark's priority: %v", bin, err)
	}
	g.move(b, group, cmd.Process.Pid)
}

// bulk downloads bulkBytes on a new connection and returns MB/s.
func bulk(b *testing.B, addr string) float64 {
	b.Helper()
	c := dialBench(b, addr)
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "GET /bytes?n=%d HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n", bulkBytes)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		b.Fatalf("bulk through %s: %v", addr, err)
	}
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatalf("bulk through %s after %d bytes: %v", addr, n, err)
		}
	}
	if n != bulkBytes {
		b.Fatalf("bulk through %s: got %d bytes, want %d", addr, n, bulkBytes)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds()
}

const healthz = "GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"

// roundTrip sends one small request on a keep-alive connection and reads
// the answer.
func roundTrip(r *bufio.Reader, c net.Conn) error {
	if _, err := io.WriteString(c, healthz); err != nil {
		return err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

// requestsPerSecond runs rrConns keep-alive connections doing small
// request/response pairs for rrDuration; it returns the rate and the
// number of requests.
func requestsPerSecond(b *testing.B, addr string) (float64, int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), rrDuration)
	defer cancel()
	var wg sync.WaitGroup
	counts := make([]int, rrConns)
	errs := make([]error, rrConns)
	start := time.Now()
	for i := range rrConns {
		c := dialBench(b, addr)
		defer c.Close()
		wg.Go(func() {
			r := bufio.NewReader(c)
			for ctx.Err() == nil {
				if err := roundTrip(r, c); err != nil {
					errs[i] = err
					return
				}
				counts[i]++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			b.Fatalf("requests through %s: %v", addr, err)
		}
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	return float64(total) / elapsed.Seconds(), total
}

// latency times latencyReqs sequential pairs on one connection.
func latency(b *testing.B, addr string) (p50, p99 time.Duration) {
	b.Helper()
	c := dialBench(b, addr)
	defer c.Close()
	r := bufio.NewReader(c)
	return timeEach(b, "latency through "+addr, latencyReqs, 100, func() error { return roundTrip(r, c) })
}

// connectLatency times connectReqs sequential new connections, each doing
// one pair and closing.
func connectLatency(b *testing.B, addr string) (p50, p99 time.Duration) {
	b.Helper()
	return timeEach(b, "connect latency through "+addr, connectReqs, 50, func() error {
		c := dialBench(b, addr)
		defer c.Close()
		return roundTrip(bufio.NewReader(c), c)
	})
}

// timeEach runs op warmup times untimed, then n times, and returns the
// median and 99th percentile of those n.
func timeEach(b *testing.B, what string, n, warmup int, op func() error) (p50, p99 time.Duration) {
	b.Helper()
	times := make([]time.Duration, 0, n)
	for i := range warmup + n {
		start := time.Now()
		if err := op(); err != nil {
			b.Fatalf("%s: %v", what, err)
		}
		if i >= warmup {
			times = append(times, time.Since(start))
		}
	}
	slices.Sort(times)
	return times[n/2], times[n*99/100]
}

func dialBench(b *testing.B, addr string) net.Conn {
	b.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		b.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	return c
}
