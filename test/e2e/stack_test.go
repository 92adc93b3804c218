package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/provider/providertest"
	"github.com/dso-project/dso/internal/testbed"
)

// swarmBed is a 3-node Swarm (1 manager, 2 workers) with DSO as a user
// would set it up on the manager: a local vault, a dso.yaml at
// /etc/dso/dso.yaml naming it and a Vault server, and the system agent
// running (it serves the dso secret driver and rotates).
type swarmBed struct {
	*testbed.Swarm
	t        testing.TB
	vault    string // the Vault address the nodes reach
	vaultSrv *providertest.VaultServer
	token    string
	stacks   []string
	agentPID string
}

// dsoYAML is the manager's /etc/dso/dso.yaml.
const swarmDSOYAML = `version: v1
mode: agent
providers:
  local:
    type: local
    vault_file: /root/.dso/vault.enc
    master_key_file: /root/.dso/master.key
  vault:
    type: vault
    address: %s
    auth:
      method: token
      params:
        token: %s
defaults:
  provider: local
agent:
  watch:
    polling_interval: 2s
`

// newSwarmBed starts it; withVault also starts a Vault dev server the
// nodes reach.
func newSwarmBed(t testing.TB, workers int, localSecrets map[string][]byte, withVault bool) *swarmBed {
	t.Helper()
	sw := testbed.NewSwarm(t, workers)
	b := &swarmBed{Swarm: sw, t: t, vault: "http://127.0.0.1:1", token: "none"}
	if withVault {
		vs, _ := startVault(t)
		b.vaultSrv, b.token = vs, vs.Token
		b.vault = "http://" + forwardFromNetwork(t, sw.Network, strings.TrimPrefix(vs.Addr, "http://"))
	}
	b.mgr("docker", "dso", "init")
	for name, v := range localSecrets {
		b.mgrIn(v, "docker", "dso", "secret", "set", name)
	}
	b.mgrIn([]byte(fmt.Sprintf(swarmDSOYAML, b.vault, b.token)), "sh", "-c", "mkdir -p /etc/dso && cat > /etc/dso/dso.yaml")
	b.startAgent()
	t.Cleanup(func() {
		for _, s := range b.stacks {
			b.Manager().Exec(t, "docker", "dso", "stack", "rm", s)
		}
	})
	return b
}

// startAgent starts the system agent on the manager and waits for its
// secret driver's socket.
func (b *swarmBed) startAgent() {
	b.t.Helper()
	b.agentPID = strings.TrimSpace(b.mgr("sh", "-c", testbed.PluginDir+"/docker-dso agent >>/var/log/dso-agent.log 2>&1 </dev/null & echo $!"))
	waitForLong(b.t, time.Minute, "the agent's secret driver socket on the manager", func() bool {
		_, _, err := b.Manager().Exec(b.t, "test", "-S", "/run/docker/plugins/dso.sock")
		return err == nil
	})
}

func (b *swarmBed) stopAgent() {
	b.t.Helper()
	// The node's PID 1 (dockerd) does not reap it: wait for the process
	// to be gone or a zombie.
	b.mgr("sh", "-c", "kill "+b.agentPID+"; while [ -e /proc/"+b.agentPID+" ] && ! grep -q '^State:.*Z' /proc/"+b.agentPID+"/status; do sleep 0.1; done")
}

func (b *swarmBed) agentLog() string {
	out, _, _ := b.Manager().Exec(b.t, "cat", "/var/log/dso-agent.log")
	return out
}

// mgr runs argv on the manager; it must succeed.
func (b *swarmBed) mgr(argv ...string) string {
	b.t.Helper()
	return b.mgrIn(nil, argv...)
}

func (b *swarmBed) mgrIn(stdin []byte, argv ...string) string {
	b.t.Helper()
	var in io.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
	}
	out, errOut, err := b.Manager().ExecInput(b.t, in, argv...)
	if err != nil {
		b.t.Fatalf("%v\n%s%s", err, out, errOut)
	}
	return out + errOut
}

// deploy writes compose into the manager and runs `docker dso stack deploy`.
func (b *swarmBed) deploy(stack, compose string) string {
	b.t.Helper()
	dir := "/srv/" + stack
	b.mgrIn([]byte(compose), "sh", "-c", "mkdir -p "+dir+" && cat > "+dir+"/compose.yaml")
	b.stacks = append(b.stacks, stack)
	return b.mgr("sh", "-c", "cd "+dir+" && docker dso stack deploy -c compose.yaml "+stack)
}

// dsoSecrets are the names of the Swarm secrets DSO made for stack.
func (b *swarmBed) dsoSecrets(stack string) []string {
	return strings.Fields(b.mgr("docker", "secret", "ls", "--filter", "label=dso.stack="+stack, "--format", "{{.Name}}"))
}

// forwardFromNetwork serves target (a loopback address) on the gateway of
// the host engine's network, where the nodes reach the host, for the
// test's life; it returns the address to give the nodes.
func forwardFromNetwork(t testing.TB, network, target string) string {
	t.Helper()
	nw, err := testbed.Docker(t).NetworkInspect(t.Context(), network, client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gw := ""
	for _, c := range nw.Network.IPAM.Config {
		if c.Gateway.IsValid() {
			gw = c.Gateway.String()
		}
	}
	if gw == "" {
		t.Fatalf("network %s has no gateway", network)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(gw, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
	return ln.Addr().String()
}

// nodeAddrs are the host-mode published port of every node.
func (b *swarmBed) nodeAddrs(port int) []string {
	var out []string
	for _, n := range b.Nodes() {
		out = append(out, net.JoinHostPort(n.IP.String(), fmt.Sprint(port)))
	}
	return out
}

// allServe reports whether every address answers path with want.
func allServe(addrs []string, path, want string) bool {
	for _, a := range addrs {
		if tryGet(a, path) != want {
			return false
		}
	}
	return true
}

// spreadLoad sends requests, a new connection each, to the nodes in turn;
// a request refused or failed by one node is tried on the next, as a
// client with several addresses does. It counts the attempts that one
// node failed, and the requests that every node failed.
type spreadLoad struct {
	total, nodeFailed, failed atomic.Int64
	stop                      chan struct{}
	wg                        sync.WaitGroup
}

func startSpreadLoad(addrs []string, path string, workers int) *spreadLoad {
	l := &spreadLoad{stop: make(chan struct{})}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				l.total.Add(1)
				ok := false
				for k := 0; k < len(addrs) && !ok; k++ {
					resp, err := hc.Get("http://" + addrs[(i+k)%len(addrs)] + path)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						ok = resp.StatusCode == http.StatusOK
					}
					if !ok {
						l.nodeFailed.Add(1)
					}
				}
				if !ok {
					l.failed.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *spreadLoad) end() (total, nodeFailed, failed int64) {
	close(l.stop)
	l.wg.Wait()
	return l.total.Load(), l.nodeFailed.Load(), l.failed.Load()
}

// TestSwarmStackDeployAndRotate: a 3-replica service over 3 nodes gets an
// env secret from the local vault and a file secret from Vault through
// `docker dso stack deploy`; nothing of either value is in Swarm's objects,
// any node's disk outside the daemon's secret tmpfs, or the agent's log;
// a change of the local secret rolls every task on every node to the new
// value while a client spread over the nodes keeps being served, and the
// old Swarm secret is removed.
func TestSwarmStackDeployAndRotate(t *testing.T) {
	apiKey, apiKey2, dbPass := canary(t, "swarm-env"), canary(t, "swarm-env2"), canary(t, "swarm-file")
	b := newSwarmBed(t, 2, map[string][]byte{"app/api_key": apiKey}, true)
	vaultPutAt(t, b, "app/db", string(dbPass))
	img := testbed.TestappImage(t)
	b.LoadImage(t, img)

	out := b.deploy("app", `
version: "3.8"
services:
  api:
    image: `+img+`
    environment:
      API_KEY: dso://app/api_key
      DB_PASSWORD_FILE: dsofile://secret/data/app/db?provider=vault#password
    ports:
      - {target: 8080, published: 18080, mode: host}
    deploy:
      replicas: 3
      endpoint_mode: dnsrr
      placement: {max_replicas_per_node: 1}
      update_config: {monitor: 1s}
`)
	t.Logf("stack deploy:\n%s", out)
	addrs := b.nodeAddrs(18080)
	waitForLong(t, 2*time.Minute, "every node's task to serve API_KEY", func() bool { return allServe(addrs, "/env/API_KEY", string(apiKey)) })
	for _, a := range addrs {
		path := tryGet(a, "/env/DB_PASSWORD_FILE")
		if path != "/run/secrets/dso.DB_PASSWORD_FILE" {
			t.Errorf("%s: DB_PASSWORD_FILE = %q, want the secret file's path", a, path)
		}
		if got := tryGet(a, "/file?path="+path); got != string(dbPass) {
			t.Errorf("%s: the Vault secret file does not hold the value", a)
		}
		if got := tryGet(a, "/stat?path="+path); !strings.HasSuffix(got, " 400") {
			t.Errorf("%s: the secret file is %q, want mode 0400", a, got)
		}
	}
	b.scanNodes(apiKey, dbPass)

	load := startSpreadLoad(addrs, "/healthz", 4)
	b.mgrIn(apiKey2, "docker", "dso", "secret", "set", "app/api_key")
	changed := time.Now()
	waitForLong(t, 3*time.Minute, "every node's task to serve the new API_KEY", func() bool { return allServe(addrs, "/env/API_KEY", string(apiKey2)) })
	took := time.Since(changed)
	total, nodeFailed, failed := load.end()
	t.Logf("rotation over 3 nodes: every task served the new value %v after the change; %d requests, %d attempts refused by the node whose task was replaced (tried on the next node), %d failed on every node", took.Round(10*time.Millisecond), total, nodeFailed, failed)
	if failed != 0 {
		t.Errorf("%d of %d requests failed on every node during the rotation", failed, total)
	}
	waitForLong(t, time.Minute, "the old Swarm secret to be removed", func() bool { return len(b.dsoSecrets("app")) == 2 })
	st := b.mgr("docker", "dso", "status")
	if !strings.Contains(st, "Swarm services (1)") || strings.Count(st, "app/api_key@") != 3 {
		t.Errorf("status does not show the 3 tasks and their versions:\n%s", st)
	}
	b.scanNodes(apiKey2, dbPass)
}

// vaultPutAt writes password into Vault's secret/<rel> through the
// address the nodes use.
func vaultPutAt(t testing.TB, b *swarmBed, rel, password string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.vault+"/v1/secret/data/"+rel, strings.NewReader(`{"data":{"password":"`+password+`"}}`))
	req.Header.Set("X-Vault-Token", b.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("vault write secret/%s: %s", rel, resp.Status)
	}
}

// scanNodes looks for each canary on every node: Swarm's objects (secret
// and service inspect, on the manager), the node's files outside the
// daemon's secret tmpfs (the raft store included), the agent's log. The
// scan must find a canary inside a task's secret tmpfs, or it proves
// nothing.
func (b *swarmBed) scanNodes(canaries ...[]byte) {
	b.t.Helper()
	inspect := b.mgr("sh", "-c", "docker secret inspect $(docker secret ls -q); docker service inspect $(docker service ls -q)")
	if !strings.Contains(inspect, "dso.ref") {
		b.t.Fatalf("secret inspect shows no DSO secret: the scan saw nothing")
	}
	log := b.agentLog()
	for _, c := range canaries {
		if bytes.Contains([]byte(inspect), c) {
			b.t.Errorf("a secret value is in docker secret/service inspect")
		}
		if strings.Contains(log, string(c)) {
			b.t.Errorf("a secret value is in the agent's log")
		}
	}
	seen := 0
	for _, n := range b.Nodes() {
		for _, c := range canaries {
			// Files holding the value, outside the tasks' secret mounts.
			// The canary goes in on stdin, never in argv.
			out, _, _ := n.ExecInput(b.t, bytes.NewReader(c), "sh", "-c", "grep -rlsF -f - /var/lib/docker /etc /root /var/log /tmp 2>/dev/null | grep -v '/mounts/secrets/' ; true")
			if strings.TrimSpace(out) != "" {
				b.t.Errorf("node %s: a secret value is on disk in %s", n.Hostname, out)
			}
			in, _, _ := n.ExecInput(b.t, bytes.NewReader(c), "sh", "-c", "grep -rlsF -f - /var/lib/docker/containers/*/mounts/secrets/ 2>/dev/null; true")
			if strings.TrimSpace(in) != "" {
				seen++
			}
		}
	}
	if seen == 0 {
		b.t.Fatalf("no canary found even in the tasks' secret tmpfs: the scan could not read")
	}
}

// waitForLong is waitFor with a bound of its own.
func waitForLong(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("timed out after %v waiting for %s", bound, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// BenchmarkSwarmRotate times, on a 3-node Swarm, a change of a local vault
// secret until Swarm has rolled every task of a service onto the new
// version (detection by the agent on the manager, the new Swarm secret,
// the service update, every task replaced start-first), against the floor
// of Swarm's own `docker service update --env-add` of the same service
// with the same update_config, measured alternately in the same run, for
// 3 and 9 replicas.
//
//	go test -run '^$' -bench BenchmarkSwarmRotate -benchtime 3x -timeout 30m ./test/e2e/
func BenchmarkSwarmRotate(b *testing.B) {
	bed := newSwarmBed(b, 2, map[string][]byte{"bench/key": []byte("v0")}, false)
	img := testbed.TestappImage(b)
	bed.LoadImage(b, img)
	mgr := bed.Manager().Client
	runs := 0
	for _, replicas := range []int{3, 9} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			// The framework calls this more than once: a stack each time
			// (a removed stack's network goes away in the background).
			runs++
			stack := fmt.Sprintf("bench%d_%d", replicas, runs)
			bed.deploy(stack, fmt.Sprintf(`
version: "3.8"
services:
  api:
    image: %s
    environment:
      KEY: dso://bench/key
    deploy:
      replicas: %d
      endpoint_mode: dnsrr
      update_config: {parallelism: 1, order: start-first, monitor: 1s}
`, img, replicas))
			svc := stack + "_api"
			waitForLong(b, 3*time.Minute, "every task running", func() bool { return converged(b, mgr, svc, replicas) })
			var dso, floor []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				before := serviceVersion(b, mgr, svc)
				start := time.Now()
				bed.mgrIn([]byte(fmt.Sprintf("v%d-%d", replicas, i+1)), "docker", "dso", "secret", "set", "bench/key")
				waitForLong(b, 5*time.Minute, "the rotation to roll every task", func() bool {
					return serviceVersion(b, mgr, svc) > before && converged(b, mgr, svc, replicas)
				})
				dso = append(dso, time.Since(start))

				before = serviceVersion(b, mgr, svc)
				start = time.Now()
				cur, err := mgr.ServiceInspect(b.Context(), svc, client.ServiceInspectOptions{})
				if err != nil {
					b.Fatal(err)
				}
				spec := cur.Service.Spec
				spec.TaskTemplate.ContainerSpec.Env = append(spec.TaskTemplate.ContainerSpec.Env, fmt.Sprintf("BENCH_ROUND=%d", i))
				if _, err := mgr.ServiceUpdate(b.Context(), cur.Service.ID, client.ServiceUpdateOptions{Version: cur.Service.Version, Spec: spec}); err != nil {
					b.Fatal(err)
				}
				waitForLong(b, 5*time.Minute, "the env-add update to roll every task", func() bool {
					return serviceVersion(b, mgr, svc) > before && converged(b, mgr, svc, replicas)
				})
				floor = append(floor, time.Since(start))
			}
			b.StopTimer()
			d, f := median(dso), median(floor)
			b.ReportMetric(d.Seconds(), "dso-s")
			b.ReportMetric(f.Seconds(), "env-add-s")
			b.ReportMetric(d.Seconds()/f.Seconds(), "ratio")
			b.Logf("%d replicas over 3 nodes: secret change -> every task on the new version, median %v; docker service update --env-add, median %v (%d rounds each, alternating)", replicas, d.Round(10*time.Millisecond), f.Round(10*time.Millisecond), b.N)
			bed.mgr("docker", "dso", "stack", "rm", stack)
		})
	}
}

// serviceVersion is the service's object version (it grows with each
// update).
func serviceVersion(t testing.TB, c *client.Client, svc string) uint64 {
	cur, err := c.ServiceInspect(t.Context(), svc, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cur.Service.Version.Index
}

// converged reports whether the service's update (if any) completed and
// replicas tasks of its current spec run.
func converged(t testing.TB, c *client.Client, svc string, replicas int) bool {
	cur, err := c.ServiceInspect(t.Context(), svc, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u := cur.Service.UpdateStatus; u != nil && u.State != "completed" {
		return false
	}
	tasks, err := c.TaskList(t.Context(), client.TaskListOptions{Filters: make(client.Filters).Add("service", cur.Service.ID).Add("desired-state", "running")})
	if err != nil {
		t.Fatal(err)
	}
	running := 0
	for _, tk := range tasks.Items {
		if tk.Status.State == "running" {
			running++
		}
	}
	return running == replicas
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestSwarmRotationThroughDriverOutageAndNodeLoss: a rotation of 3
// replicas is under way when the agent (the secret driver and the rotator)
// stops and a worker node dies. Once the agent is back, every replica runs
// again, on the nodes left, holding the new version: no task is left
// without its secret, none on the old version.
func TestSwarmRotationThroughDriverOutageAndNodeLoss(t *testing.T) {
	b := newSwarmBed(t, 2, map[string][]byte{"app/api_key": canary(t, "outage-1")}, false)
	img := testbed.TestappImage(t)
	b.LoadImage(t, img)
	b.deploy("app", `
version: "3.8"
services:
  api:
    image: `+img+`
    environment:
      API_KEY: dso://app/api_key
    deploy:
      replicas: 3
      endpoint_mode: dnsrr
      update_config: {parallelism: 1, monitor: 1s}
`)
	mgr := b.Manager().Client
	waitForLong(t, 2*time.Minute, "3 tasks running", func() bool { return converged(t, mgr, "app_api", 3) })

	b.mgrIn(canary(t, "outage-2"), "docker", "dso", "secret", "set", "app/api_key")
	waitForLong(t, time.Minute, "the rotation to start", func() bool {
		cur, err := mgr.ServiceInspect(t.Context(), "app_api", client.ServiceInspectOptions{})
		return err == nil && cur.Service.UpdateStatus != nil && cur.Service.UpdateStatus.State == "updating"
	})
	b.stopAgent()
	time.Sleep(3 * time.Second)
	b.RemoveNode(t, b.Workers()[1])
	time.Sleep(5 * time.Second)
	b.startAgent()
	back := time.Now()

	var want, why string
	deadline := time.Now().Add(3 * time.Minute)
	for !everyReplicaOn(t, mgr, &want, &why) {
		if time.Now().After(deadline) {
			log := b.agentLog()
			out, _, _ := b.Manager().Exec(t, "docker", "service", "ps", "--no-trunc", "app_api")
			t.Fatalf("timed out after 3m0s waiting for every replica running on the new version: %s\ndocker service ps app_api:\n%s\nthe agent's log (last 6,000 bytes):\n%s", why, out, log[max(0, len(log)-6000):])
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("every replica ran %s again %v after the agent came back", want, time.Since(back).Round(100*time.Millisecond))
	waitForLong(t, time.Minute, "the old version's Swarm secret to be removed", func() bool {
		return slices.Equal(b.dsoSecrets("app"), []string{want})
	})
}

// everyReplicaOn reports whether app_api's update is done and each of its
// 3 slots runs a task holding the newest Swarm secret of app/api_key
// (version 2), whose name it puts in want, with no running task on another
// one; why says what is missing. (After a node's loss during a start-first
// update, Swarm can leave a slot with two running tasks of the new spec:
// both count, neither may hold the old version.)
func everyReplicaOn(t *testing.T, mgr *client.Client, want, why *string) bool {
	list, err := mgr.SecretList(t.Context(), client.SecretListOptions{})
	if err != nil {
		*why = "secret list: " + err.Error()
		return false
	}
	newest := ""
	for _, s := range list.Items {
		if s.Spec.Labels["dso.version"] == "2" {
			newest = s.Spec.Name
		}
	}
	if newest == "" {
		*why = "no Swarm secret of version 2"
		return false
	}
	cur, err := mgr.ServiceInspect(t.Context(), "app_api", client.ServiceInspectOptions{})
	if err != nil {
		*why = "service inspect: " + err.Error()
		return false
	}
	if u := cur.Service.UpdateStatus; u != nil && u.State != "completed" {
		*why = fmt.Sprintf("the service's update is %s: %s", u.State, u.Message)
		return false
	}
	*want = newest
	tasks, err := mgr.TaskList(t.Context(), client.TaskListOptions{Filters: make(client.Filters).Add("service", "app_api").Add("desired-state", "running")})
	if err != nil {
		*why = "task list: " + err.Error()
		return false
	}
	slots := map[int]bool{}
	for _, tk := range tasks.Items {
		if tk.Status.State != "running" || len(tk.Spec.ContainerSpec.Secrets) != 1 || tk.Spec.ContainerSpec.Secrets[0].SecretName != newest {
			*why = fmt.Sprintf("task %s (slot %d) is %s with secrets %v", tk.ID, tk.Slot, tk.Status.State, tk.Spec.ContainerSpec.Secrets)
			return false
		}
		slots[tk.Slot] = true
	}
	if len(slots) != 3 {
		*why = fmt.Sprintf("%d running tasks in %d slots", len(tasks.Items), len(slots))
		return false
	}
	if len(tasks.Items) > 3 {
		t.Logf("Swarm runs %d tasks for 3 replicas (a slot kept two after the node's loss), all on %s", len(tasks.Items), newest)
	}
	return true
}

// TestSwarmDriverServesFromCacheWhileVaultIsDown: Vault is stopped, then
// the service is scaled up onto nodes that lack its secret: the driver
// serves them the last value it got, from the agent's cache.
func TestSwarmDriverServesFromCacheWhileVaultIsDown(t *testing.T) {
	dbPass := canary(t, "swarm-cache")
	b := newSwarmBed(t, 2, nil, true)
	vaultPutAt(t, b, "app/db", string(dbPass))
	img := testbed.TestappImage(t)
	b.LoadImage(t, img)
	b.deploy("app", `
version: "3.8"
services:
  api:
    image: `+img+`
    environment:
      DB_PASSWORD_FILE: dsofile://secret/data/app/db?provider=vault#password
    ports:
      - {target: 8080, published: 18081, mode: host}
    deploy:
      replicas: 1
      endpoint_mode: dnsrr
      placement: {max_replicas_per_node: 1}
`)
	mgr := b.Manager().Client
	waitForLong(t, 2*time.Minute, "1 task running", func() bool { return converged(t, mgr, "app_api", 1) })
	b.vaultSrv.Stop()
	b.mgr("docker", "service", "scale", "--detach", "app_api=3")
	addrs := b.nodeAddrs(18081)
	waitForLong(t, 2*time.Minute, "every node's task to serve the Vault secret", func() bool {
		return allServe(addrs, "/file?path=/run/secrets/dso.DB_PASSWORD_FILE", string(dbPass))
	})
	if log := b.agentLog(); !strings.Contains(log, "serving a secret from the cache") {
		t.Errorf("the agent's log does not say it served from the cache:\n%s", log)
	}
}
