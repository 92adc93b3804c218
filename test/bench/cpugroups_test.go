package bench

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// cpuGroups put each party of BenchmarkProxy in a CPU control group of its
// own, of equal weight, as a host that runs each service in its own unit
// does: the client (the benchmark's process), the backend (the testapp
// container), the proxies (every path's, each measured alone) and other
// work that keeps the CPUs busy (DSO_BENCH_PROXY_BUSY). On two
// CPUs the parties compete for time, and without the groups where a proxy
// lands is an accident of how it was started: the engine (its cgroupfs
// driver) puts all containers in one group, where a proxy container
// shares one share with the backend, while a proxy the benchmark starts
// on the host competes with a share of its own. Measured here before the
// groups: the same proxy container in the host's network namespace, which
// crosses no bridge the host's processes do not, forwarded 0.51-0.55x a
// direct connection's small requests where the same code as a process of
// the host forwarded 0.60-0.63x in the same runs (three runs); with the
// groups, each forwards what the other does.
type cpuGroups struct {
	root   string // the cpu hierarchy: cgroup v1's cpu or the v2 root
	origin string // the benchmark's group in it before, "" for root
}

// cpuGroupNames are the groups, each dsobench-NAME under root.
var cpuGroupNames = []string{"client", "backend", "proxy", "busy"}

// newCPUGroups makes the groups and moves the benchmark's process into
// the client's; they are removed when the benchmark ends.
func newCPUGroups(b *testing.B) *cpuGroups {
	b.Helper()
	g := &cpuGroups{root: "/sys/fs/cgroup/cpu"}
	if ctl, err := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control"); err == nil {
		if !slices.Contains(strings.Fields(string(ctl)), "cpu") {
			b.Fatalf("cgroup v2 without the cpu controller enabled at the root (cgroup.subtree_control: %q): the benchmark cannot give its parties equal CPU shares", strings.TrimSpace(string(ctl)))
		}
		g.root = "/sys/fs/cgroup"
	}
	g.origin = ownGroup(g.root != "/sys/fs/cgroup/cpu")
	b.Cleanup(g.remove) // after every process the benchmark started ended
	for _, n := range cpuGroupNames {
		if err := os.Mkdir(g.dir(n), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			b.Fatalf("making the CPU group %s (the benchmark runs as root): %v", g.dir(n), err)
		}
	}
	g.move(b, "client", os.Getpid())
	return g
}

func (g *cpuGroups) dir(name string) string { return filepath.Join(g.root, "dsobench-"+name) }

// originGroup names, for move, the group the benchmark started in.
const originGroup = "origin"

// move puts the processes pids (each with all its threads) in group name.
func (g *cpuGroups) move(b *testing.B, name string, pids ...int) {
	b.Helper()
	dir := g.dir(name)
	if name == originGroup {
		dir = filepath.Join(g.root, g.origin)
	}
	for _, pid := range pids {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			b.Fatalf("moving process %d to the CPU group %s: %v", pid, dir, err)
		}
	}
}

// container moves the process of container id to group name.
func (g *cpuGroups) container(b *testing.B, name, id string) {
	b.Helper()
	ins, err := testbed.Docker(b).ContainerInspect(b.Context(), id, client.ContainerInspectOptions{})
	if err != nil {
		b.Fatal(err)
	}
	g.move(b, name, ins.Container.State.Pid)
}

// dockerProxies moves to the proxies' group the docker-proxy processes
// that forward to ip (Docker's userland proxy, one per published port and
// address family), and fails when there is none.
func (g *cpuGroups) dockerProxies(b *testing.B, ip string) {
	b.Helper()
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	found := 0
	for _, f := range cmdlines {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue // ended meanwhile
		}
		args := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
		if filepath.Base(args[0]) != "docker-proxy" || !slices.Contains(args, ip) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		g.move(b, "proxy", pid)
		found++
	}
	if found == 0 {
		b.Fatalf("no docker-proxy process forwards to %s: the engine publishes ports otherwise (userland-proxy off?)", ip)
	}
}

// ownGroup is the path of this process's group in the cpu hierarchy
// (cgroup v2's when v2) from /proc/self/cgroup, "" when not found.
func ownGroup(v2 bool) string {
	data, _ := os.ReadFile("/proc/self/cgroup")
	for _, line := range strings.Split(string(data), "\n") {
		// ID:CONTROLLERS:PATH; v2's line is 0::PATH.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if (v2 && parts[0] == "0" && parts[1] == "") || (!v2 && slices.Contains(strings.Split(parts[1], ","), "cpu")) {
			return parts[2]
		}
	}
	return ""
}

// remove moves every process left in the groups (the benchmark's own)
// back to the benchmark's group, else to the root group, and removes the
// groups.
func (g *cpuGroups) remove() {
	for _, n := range cpuGroupNames {
		procs, _ := os.ReadFile(filepath.Join(g.dir(n), "cgroup.procs"))
		for _, pid := range strings.Fields(string(procs)) {
			if os.WriteFile(filepath.Join(g.root, g.origin, "cgroup.procs"), []byte(pid), 0) != nil {
				os.WriteFile(filepath.Join(g.root, "cgroup.procs"), []byte(pid), 0)
			}
		}
		os.Remove(g.dir(n))
	}
}

// userHZ is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// usage is what the processes in group name have used so far: CPU time
// (user and system, each process's threads included, to a tick of 10 ms)
// and sleeps (voluntary context switches: a thread waited for work). In
// the proxies' group it is the busy proxy's: the others idle.
func (g *cpuGroups) usage(b *testing.B, name string) (cpu time.Duration, sleeps int) {
	b.Helper()
	procs, err := os.ReadFile(filepath.Join(g.dir(name), "cgroup.procs"))
	if err != nil {
		b.Fatal(err)
	}
	var ticks int
	for _, pid := range strings.Fields(string(procs)) {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			b.Fatalf("reading the CPU time of process %s of group %s: %v", pid, name, err)
		}
		// After "PID (COMM) ", utime and stime are the 12th and 13th fields.
		_, rest, _ := strings.Cut(string(stat), ") ") // COMM may hold spaces, not ") "
		f := strings.Fields(rest)
		for _, v := range f[11:13] {
			n, err := strconv.Atoi(v)
			if err != nil {
				b.Fatalf("/proc/%s/stat: %q is not a CPU time", pid, v)
			}
			ticks += n
		}
		tasks, err := filepath.Glob("/proc/" + pid + "/task/*/status")
		if err != nil || len(tasks) == 0 {
			b.Fatalf("process %s of group %s: no thread found (%v)", pid, name, err)
		}
		for _, t := range tasks {
			status, err := os.ReadFile(t)
			if err != nil {
				continue // the thread ended
			}
			_, after, ok := strings.Cut(string(status), "\nvoluntary_ctxt_switches:")
			n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(after, "\n", 2)[0]))
			if !ok || err != nil {
				b.Fatalf("%s: no voluntary_ctxt_switches", t)
			}
			sleeps += n
		}
	}
	return time.Duration(ticks) * time.Second / userHZ, sleeps
}

// machineTicks returns the time all CPUs spent idle and in all, in ticks
// since boot (/proc/stat's first line, user to steal: steal counts as
// busy; guest time is already in user and nice and is not added again).
// Between two readings it gives the share of the machine's CPU time left
// idle: when the parties of a path together need more CPU than the
// machine has, idle time is work that waited on one party while a CPU had
// nothing to run.
func machineTicks(b *testing.B) (idle, total uint64) {
	b.Helper()
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("/proc/stat: first line %q is not the CPUs' total", line)
	}
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %q is not a tick count", v)
		}
		total += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return idle, total
}
