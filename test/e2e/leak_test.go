package e2e

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/coregx/ahocorasick"
	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/dso-project/dso/internal/testbed"
)

// place is a directory tree the leak scan reads file by file.
type place struct {
	path     string
	required bool // it must exist (else only when present)
	hasFiles bool // it must hold at least one regular file
	// skip, when set, names directories under path not to read (counted
	// under the place's name with " (left out)" added).
	skip func(dir string) bool
}

// hostPlaces are where a leaked value would land on the host's disk
// besides the engine's root and the user's home: containerd's and the
// engine's runtime state, temp files, logs and the journal.
var hostPlaces = []place{
	{path: "/var/lib/containerd"},
	{path: "/run/docker"},
	{path: "/run/containerd"},
	{path: "/tmp", required: true, hasFiles: true},
	{path: "/var/tmp", required: true},
	{path: "/var/log"},
	{path: "/run/log/journal"},
}

// scanChunk is how much of a file the scan holds at once.
const scanChunk = 4 << 20

// leakScan searches for canary values in every form a leak would take: the
// raw bytes, their JSON string form, hex (both cases) and base64 (standard
// and URL alphabets) at each of the three alignments a value can have
// inside a longer base64 text, padded or not. The base64 forms cover the
// JSON payload the agent sends to dso-init, where encoding/json writes a
// []byte as standard base64.
type leakScan struct {
	canaries [][]byte
	ac       *ahocorasick.Automaton
	owner    []patternOwner // by pattern id
	overlap  int            // longest pattern - 1: kept between chunks

	read     map[string]int           // regular files or texts read, by place
	took     map[string]time.Duration // time spent, by place
	seen     map[fileKey]bool         // files read already (home is under /tmp)
	since    time.Time                // files unchanged since cannot hold a canary
	leaks    []string                 // "canary #i (encoding) in where"
	problems []string                 // what the scan was meant to read and could not
}

type fileKey struct{ dev, ino uint64 }

type patternOwner struct {
	canary   int
	encoding string
}

func newLeakScan(canaries [][]byte) (*leakScan, error) {
	s := &leakScan{canaries: canaries, read: map[string]int{}, took: map[string]time.Duration{}, seen: map[fileKey]bool{}}
	b := ahocorasick.NewBuilder()
	longest := 0
	for i, c := range canaries {
		for enc, p := range encodings(c) {
			b.AddPattern(p)
			s.owner = append(s.owner, patternOwner{canary: i, encoding: enc})
			longest = max(longest, len(p))
		}
	}
	ac, err := b.Build()
	if err != nil {
		return nil, err
	}
	s.ac, s.overlap = ac, longest-1
	return s, nil
}

// encodings returns the forms of v to search for, by name.
func encodings(v []byte) map[string][]byte {
	js, _ := json.Marshal(string(v))
	out := map[string][]byte{
		"raw":  v,
		"json": js[1 : len(js)-1],
		"hex":  []byte(hex.EncodeToString(v)),
		"HEX":  []byte(strings.ToUpper(hex.EncodeToString(v))),
	}
	for _, e := range []struct {
		name string
		enc  *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for k := range 3 {
			// The characters that depend on v alone when v follows k
			// other bytes: from the first whole sextet after them to
			// the last whole sextet of v.
			text := e.enc.EncodeToString(append(make([]byte, k), v...))
			from, to := (8*k+5)/6, 8*(k+len(v))/6
			out[e.name+"@"+strconv.Itoa(k)] = []byte(text[from:to])
		}
	}
	return out
}

// search records every canary found in data.
func (s *leakScan) search(where string, data []byte) {
	seen := map[int]bool{}
	for _, m := range s.ac.FindAllOverlapping(data) {
		if seen[m.PatternID] {
			continue
		}
		seen[m.PatternID] = true
		o := s.owner[m.PatternID]
		s.leaks = append(s.leaks, fmt.Sprintf("canary #%d (%s) in %s", o.canary, o.encoding, where))
	}
}

func (s *leakScan) problem(format string, args ...any) {
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

// gone reports whether err says the thing was removed while the scan ran:
// other tests remove their files and processes meanwhile.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// text searches a string the caller has (a command's output, a log).
func (s *leakScan) text(name, data string) {
	s.read["texts"]++
	s.search(name, []byte(data))
}

// file reads a regular file in chunks (any size) and searches it. A
// namespace handle (nsfs, as under /run/docker/netns) holds no data and
// cannot be read: it is left out.
func (s *leakScan) file(where, path string) bool {
	f, err := os.Open(path)
	if err != nil {
		if !gone(err) {
			s.problem("cannot read %s: %v", path, err)
		}
		return false
	}
	defer f.Close()
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err == nil && fs.Type == unix.NSFS_MAGIC {
		return false
	}
	buf := make([]byte, 0, scanChunk+s.overlap)
	for {
		n, err := io.ReadFull(f, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		s.search(where+" "+path, buf)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return true
		}
		if err != nil {
			s.problem("cannot read %s: %v", path, err)
			return false
		}
		keep := min(s.overlap, len(buf))
		buf = append(buf[:0], buf[len(buf)-keep:]...)
	}
}

// tree reads every regular file under p.path that changed since the
// canaries were made (a file whose inode last changed before a value
// existed cannot hold it; the comparison allows a second for timestamp
// granularity). It does not descend into a container's root filesystem as
// mounted under the engine root (a FUSE or overlay view): the layers it
// shows are read directly.
func (s *leakScan) tree(name string, p place) {
	if _, err := os.Stat(p.path); err != nil {
		if !errors.Is(err, fs.ErrNotExist) || p.required {
			s.problem("cannot read %s (%s): %v", name, p.path, err)
		}
		return
	}
	s.read[name] += 0
	defer s.timed(name)()
	err := filepath.WalkDir(p.path, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if !gone(err) {
				s.problem("cannot read %s: %v", path, err)
			}
			return nil
		}
		if d.IsDir() && path != p.path && p.skip != nil && p.skip(path) {
			s.read[name+" (left out)"]++
			return filepath.SkipDir
		}
		if d.IsDir() && path != p.path {
			var fs unix.Statfs_t
			if err := unix.Statfs(path, &fs); err == nil && (fs.Type == unix.FUSE_SUPER_MAGIC || fs.Type == unix.OVERLAYFS_SUPER_MAGIC) {
				s.read["container filesystems as mounted (their layers are read)"]++
				return filepath.SkipDir
			}
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if !gone(err) {
				s.problem("cannot stat %s: %v", path, err)
			}
			return nil
		}
		st := info.Sys().(*syscall.Stat_t)
		k := fileKey{uint64(st.Dev), st.Ino}
		switch {
		case s.seen[k]:
			s.read[name]++
		case time.Unix(st.Ctim.Unix()).Before(s.since.Add(-time.Second)):
			s.read[name+": unchanged since the canaries were made"]++
		case s.file("file", path):
			s.seen[k] = true
			s.read[name]++
		}
		return nil
	})
	if err != nil {
		s.problem("walking %s: %v", p.path, err)
	}
	if p.hasFiles && s.read[name]+s.read[name+": unchanged since the canaries were made"] == 0 {
		s.problem("read no file in %s (%s), which cannot be empty", name, p.path)
	}
}

// timed adds the time until the returned function runs to place's.
func (s *leakScan) timed(place string) func() {
	start := time.Now()
	return func() { s.took[place] += time.Since(start) }
}

// capabilities returns a capability set ("CapPrm", "CapBnd") from a
// /proc/PID/status.
func capabilities(status, set string) (uint64, bool) {
	b, err := os.ReadFile(status)
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, set+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// processes reads the argv of every process and the environment of every
// process in the scan's own PID namespace: the host's processes. Those of
// containers are left out: an application's environment holds its env
// secrets by design. A process the kernel refuses to show even to root is
// left out only when it holds a capability outside the scan's bounding
// set: no process the tests start (nor any of their descendants) can hold
// one, so it is not one of theirs (here: the sandbox's own init).
func (s *leakScan) processes() {
	defer s.timed("/proc")()
	self, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		s.problem("cannot read the scan's own PID namespace: %v", err)
		return
	}
	bounding, ok := capabilities("/proc/self/status", "CapBnd")
	if !ok {
		s.problem("cannot read the scan's own capability bounding set")
		return
	}
	beyond := func(dir string, err error) bool {
		if !errors.Is(err, fs.ErrPermission) {
			return false
		}
		prm, ok := capabilities(dir+"/status", "CapPrm")
		return ok && prm&^bounding != 0
	}
	const outside = "processes holding capabilities no test process can (not read)"
	s.read[outside] += 0
	pids, err := filepath.Glob("/proc/[0-9]*")
	if err != nil || len(pids) == 0 {
		s.problem("cannot list /proc: %v", err)
		return
	}
	// read returns dir/name, or nil when the process is gone or out of reach.
	read := func(dir, name string) []byte {
		b, err := os.ReadFile(dir + "/" + name)
		switch {
		case err == nil:
			return b
		case beyond(dir, err):
			s.read[outside]++
		case !gone(err):
			s.problem("cannot read %s/%s: %v", dir, name, err)
		}
		return nil
	}
	for _, dir := range pids {
		if b := read(dir, "cmdline"); b != nil {
			s.read["/proc/*/cmdline"]++
			s.search(dir+"/cmdline", b)
		}
		ns, err := os.Readlink(dir + "/ns/pid")
		if err != nil {
			if beyond(dir, err) {
				s.read[outside]++
			} else if !gone(err) {
				s.problem("cannot read %s/ns/pid: %v", dir, err)
			}
			continue
		}
		if ns != self {
			continue
		}
		if b := read(dir, "environ"); b != nil {
			s.read["/proc/*/environ (host processes)"]++
			s.search(dir+"/environ", b)
		}
	}
	for _, what := range []string{"/proc/*/cmdline", "/proc/*/environ (host processes)"} {
		if s.read[what] == 0 {
			s.problem("read no %s", what)
		}
	}
}

// engine reads `docker inspect` of every container and image, and every
// file under the engine's root directory as `docker info` reports it.
func (s *leakScan) engine(t *testing.T) {
	defer s.timed("docker inspect")()
	cli := testbed.Docker(t)
	ctx := t.Context()
	info, err := cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		s.problem("docker info: %v", err)
		return
	}
	if info.Info.DockerRootDir == "" {
		s.problem("docker info names no DockerRootDir")
	} else {
		s.tree("the engine root", place{path: info.Info.DockerRootDir, required: true, hasFiles: true})
	}
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		s.problem("listing containers: %v", err)
	}
	for _, c := range cs.Items {
		r, err := cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			if !cerrdefs.IsNotFound(err) {
				s.problem("docker inspect %.12s: %v", c.ID, err)
			}
			continue
		}
		s.read["docker inspect (containers)"]++
		s.search("docker inspect "+c.ID[:12], r.Raw)
	}
	is, err := cli.ImageList(ctx, client.ImageListOptions{All: true})
	if err != nil {
		s.problem("listing images: %v", err)
	}
	for _, im := range is.Items {
		r, err := cli.ImageInspect(ctx, im.ID)
		if err != nil {
			if !cerrdefs.IsNotFound(err) {
				s.problem("docker image inspect %s: %v", im.ID, err)
			}
			continue
		}
		raw, _ := json.Marshal(r)
		s.read["docker image inspect"]++
		s.search("docker image inspect "+im.ID, raw)
	}
	if s.read["docker image inspect"] == 0 {
		s.problem("inspected no image (the test's own images at least exist)")
	}
}

// scanHost runs the whole scan: texts, the engine, the host's disk, the
// user's home and recorded docker environments, every process.
func scanHost(t *testing.T, canaries [][]byte, home, records string, texts ...string) *leakScan {
	t.Helper()
	s, err := newLeakScan(canaries)
	if err != nil {
		t.Fatalf("leak scan: %v", err)
	}
	s.since = firstCanary(t)
	for i, text := range texts {
		s.text("text #"+strconv.Itoa(i), text)
	}
	s.engine(t)
	for _, p := range hostPlaces {
		s.tree(p.path, p)
	}
	s.tree("the user's home", place{path: home, required: true, hasFiles: true})
	s.tree("recorded environments of docker processes", place{path: records, required: true, hasFiles: true})
	s.processes()
	return s
}

// report lists how much of each place was read.
func (s *leakScan) report() string {
	names := slices.Collect(maps.Keys(s.read))
	for n := range s.took {
		if _, ok := s.read[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "\n  %6d  %-8s %s", s.read[n], s.took[n].Round(time.Millisecond), n)
	}
	return b.String()
}

// assertNoLeak checks every surface named in the promise for each canary
// and fails the test on a leak or on any place the scan could not read.
// The scan needs root: it reads the engine's files and every process.
func assertNoLeak(t *testing.T, u *user, canaries [][]byte, texts ...string) {
	t.Helper()
	testbed.NeedRoot(t, "the leak scan reads the engine's files and every process's environment")
	s := scanHost(t, canaries, u.home, u.records, texts...)
	for _, p := range s.problems {
		t.Errorf("leak scan: %s", p)
	}
	for _, l := range s.leaks {
		t.Errorf("LEAK: %s", l)
	}
	t.Logf("leak scan read (files, processes, objects):%s", s.report())
}

// assertNotInTexts is the scan of texts alone, for a value that is in some
// process's environment on purpose (a signing key the agent is given).
func assertNotInTexts(t *testing.T, value []byte, texts ...string) {
	t.Helper()
	s, err := newLeakScan([][]byte{value})
	if err != nil {
		t.Fatal(err)
	}
	for i, text := range texts {
		s.text("text #"+strconv.Itoa(i), text)
	}
	for _, l := range s.leaks {
		t.Errorf("LEAK: %s", l)
	}
}

// found reports whether the scan found canary i in a place whose name
// starts with prefix.
func (s *leakScan) found(i int, prefix string) bool {
	return slices.ContainsFunc(s.leaks, func(l string) bool {
		_, where, _ := strings.Cut(l, ") in ")
		return strings.HasPrefix(l, "canary #"+strconv.Itoa(i)+" ") && strings.HasPrefix(where, prefix)
	})
}
