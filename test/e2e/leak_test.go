package e2e

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// diskRoots are where a leaked value would land on the host's disk: the
// engine's and containerd's state (container configs, layers, meta.db,
// logs), the runtime state, temp files, the user's home.
var diskRoots = []string{"/var/lib/docker", "/var/lib/containerd", "/run/docker", "/run/containerd", "/tmp", "/var/tmp"}

// maxScanned bounds the size of a file read by the scan.
const maxScanned = 256 << 20

// assertNoLeak checks every surface named in the promise for each canary:
// inspect of every container and image, the files under diskRoots and the
// user's home, every process's argv, the environment of every docker
// process the user ran (compose included), and the texts given (dso's own
// output, docker logs).
func assertNoLeak(t *testing.T, u *user, canaries [][]byte, texts ...string) {
	t.Helper()
	cli := testbed.Docker(t)
	found := func(where string, data []byte) {
		t.Helper()
		for _, c := range canaries {
			if bytes.Contains(data, c) {
				t.Errorf("LEAK: secret value found in %s", where)
			}
		}
	}
	for i, s := range texts {
		found("text #"+string(rune('0'+i)), []byte(s))
	}
	cs, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs.Items {
		r, err := cli.ContainerInspect(t.Context(), c.ID, client.ContainerInspectOptions{})
		if err != nil {
			continue
		}
		found("docker inspect "+c.ID[:12], r.Raw)
	}
	is, err := cli.ImageList(t.Context(), client.ImageListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range is.Items {
		r, err := cli.ImageInspect(t.Context(), im.ID)
		if err != nil {
			continue
		}
		raw, _ := json.Marshal(r)
		found("docker image inspect "+im.ID, raw)
	}
	scanned := 0
	for _, root := range append(diskRoots, u.home) {
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() {
				if strings.HasPrefix(path, "/proc") || strings.HasPrefix(path, "/sys") {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil || info.Size() > maxScanned {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			scanned++
			found("file "+path, data)
			return nil
		})
	}
	if scanned == 0 {
		t.Errorf("leak scan read no file")
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err == nil {
			found(p, data)
		}
	}
	envs, _ := filepath.Glob(filepath.Join(u.records, "env.*"))
	if len(envs) == 0 {
		t.Errorf("no environment of a docker process was recorded")
	}
	for _, p := range envs {
		data, _ := os.ReadFile(p)
		found("environment of a docker/compose process ("+filepath.Base(p)+")", data)
	}
}
