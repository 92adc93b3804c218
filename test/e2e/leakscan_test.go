package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// TestLeakScanFindsPlantedCanaries proves the scan looks where it says: a
// canary planted in each kind of place, each in another encoding, is found
// there; a canary planted nowhere is found nowhere.
func TestLeakScanFindsPlantedCanaries(t *testing.T) {
	testbed.NeedRoot(t, "the leak scan reads the engine's files and every process's environment")
	cli := testbed.Docker(t)
	const (
		inLayer  = iota // a file written into a container's layer, under the engine root
		inLabel         // a container label: docker inspect
		inEnv           // a host process's environment, as a JSON payload (base64)
		inArgv          // a host process's argv
		inLog           // a file under /var/log, hex
		inHome          // a file in the user's home, base64url
		inRecord        // an environment recorded by the docker wrapper
		inText          // a command's output, JSON-escaped
		nowhere
	)
	canaries := make([][]byte, nowhere+1)
	for i := range canaries {
		canaries[i] = canary(t, "probe")
	}
	canaries[inText] = append(canaries[inText], "\nwith a newline"...)

	// A created container: a label, and a file copied into its layer.
	ctr, err := cli.ContainerCreate(t.Context(), client.ContainerCreateOptions{
		Config: &container.Config{Image: testbed.BusyboxImage(t), Cmd: []string{"true"}, Labels: map[string]string{"probe": string(canaries[inLabel])}},
		Name:   "dso-leakprobe-" + hex.EncodeToString(canaries[nowhere][len(canaries[nowhere])-6:]),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.ContainerRemove(t.Context(), ctr.ID, client.ContainerRemoveOptions{Force: true})
	})
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	body := []byte("payload=" + hex.EncodeToString(canaries[inLayer]) + "\n")
	tw.WriteHeader(&tar.Header{Name: "probe.txt", Mode: 0o644, Size: int64(len(body))})
	tw.Write(body)
	tw.Close()
	if _, err := cli.CopyToContainer(t.Context(), ctr.ID, client.CopyToContainerOptions{DestinationPath: "/", Content: &layer}); err != nil {
		t.Fatal(err)
	}

	// A host process holding one canary in its environment, as the JSON
	// payload to dso-init would carry it, and another in its argv.
	payload, _ := json.Marshal(map[string]any{"env": map[string][]byte{"TOKEN": canaries[inEnv]}})
	proc := exec.Command("sh", "-c", "sleep 600", string(canaries[inArgv]))
	proc.Env = []string{"DSO_PAYLOAD=" + string(payload)}
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })

	logFile := filepath.Join("/var/log", "dso-leakprobe-"+hex.EncodeToString(canaries[nowhere][len(canaries[nowhere])-6:])+".log")
	if err := os.WriteFile(logFile, []byte(strings.ToUpper(hex.EncodeToString(canaries[inLog]))), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(logFile) })

	home, records := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(home, "note"), []byte("x"+base64.URLEncoding.EncodeToString(canaries[inHome])), 0o600)
	os.WriteFile(filepath.Join(records, "env.1"), []byte("K="+string(canaries[inRecord])), 0o600)
	js, _ := json.Marshal(map[string]string{"value": string(canaries[inText])})

	s := scanHost(t, canaries, home, records, "some output", string(js))
	for _, p := range s.problems {
		t.Errorf("the scan could not look: %s", p)
	}
	t.Logf("read:%s", s.report())
	t.Logf("found:\n  %s", strings.Join(s.leaks, "\n  "))
	root := mustRootDir(t)
	for i, where := range map[int]string{
		inLayer:  "file " + root + "/",
		inLabel:  "docker inspect " + ctr.ID[:12],
		inEnv:    "/proc/",
		inArgv:   "/proc/",
		inLog:    "file " + logFile,
		inHome:   "file " + home,
		inRecord: "file " + records,
		inText:   "text #1",
	} {
		if !s.found(i, where) {
			t.Errorf("canary #%d, planted in %s, was not found there", i, where)
		}
	}
	for _, l := range s.leaks {
		if strings.HasPrefix(l, "canary #"+strconv.Itoa(nowhere)+" ") {
			t.Errorf("found a canary planted nowhere: %s", l)
		}
	}
}

// TestLeakScanFailsBlind: a place that must hold files and holds none, or
// a required place that is missing, is a failure of the scan, not a pass.
func TestLeakScanFailsBlind(t *testing.T) {
	s, err := newLeakScan([][]byte{[]byte("x-canary-blind")})
	if err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	s.tree("empty", place{path: empty, required: true, hasFiles: true})
	s.tree("missing", place{path: filepath.Join(empty, "nope"), required: true})
	s.tree("optional", place{path: filepath.Join(empty, "nope")})
	if len(s.problems) != 2 || !strings.Contains(s.problems[0], "read no file in empty") || !strings.Contains(s.problems[1], "missing") {
		t.Errorf("problems = %q, want the empty place and the missing one", s.problems)
	}
}

// TestLeakScanEncodings: a value is found inside longer base64 texts at
// every alignment, padded or not, and split across read chunks.
func TestLeakScanEncodings(t *testing.T) {
	v := []byte("dso-canary-enc-0123456789abcdef")
	s, err := newLeakScan([][]byte{v})
	if err != nil {
		t.Fatal(err)
	}
	for k := range 3 {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
			data := append(append(bytes.Repeat([]byte{0xff}, k), v...), "trailing"...)
			s.leaks = nil
			s.search("b64", []byte(enc.EncodeToString(data)))
			if len(s.leaks) == 0 {
				t.Errorf("not found in base64 at offset %d", k)
			}
		}
	}
	big := filepath.Join(t.TempDir(), "big")
	data := append(bytes.Repeat([]byte("."), scanChunk-5), v...)
	os.WriteFile(big, data, 0o600)
	s.leaks = nil
	if !s.file("file", big) || len(s.leaks) == 0 {
		t.Errorf("a value across two read chunks was not found")
	}
}

func mustRootDir(t *testing.T) string {
	info, err := testbed.Docker(t).Info(t.Context(), client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return info.Info.DockerRootDir
}
