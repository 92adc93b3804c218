package testbed

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// entry is one file, symlink or directory of a build context.
type entry struct {
	name     string // path in the context
	hostFile string // regular file: copied from here
	link     string // symlink: its target
	dir      bool
	mode     int64
}

// BuildImage builds an image with the Engine API (legacy builder, no pull, no
// cache) and removes it at t.Cleanup, together with any container still
// using it. files maps a path in the build context to a host file (its mode
// is kept); the dockerfile COPYs them where they belong in the image.
// Do not start the Dockerfile with a "# syntax" line: it makes the engine
// pull. The image is tagged dso-test/NAME:<unique>, and the tag is returned.
func BuildImage(t testing.TB, name string, files map[string]string, dockerfile string) string {
	t.Helper()
	entries := make([]entry, 0, len(files))
	for ctxPath, host := range files {
		fi, err := os.Stat(host)
		if err != nil {
			t.Fatalf("testbed: image %s: file for %q: %v", name, ctxPath, err)
		}
		entries = append(entries, entry{name: ctxPath, hostFile: host, mode: int64(fi.Mode().Perm())})
	}
	return buildImage(t, name, entries, dockerfile)
}

func buildImage(t testing.TB, name string, entries []entry, dockerfile string) string {
	t.Helper()
	cli := Docker(t)
	tag := fmt.Sprintf("dso-test/%s:%s", strings.ToLower(name), uniqueSuffix())

	buildCtx, err := tarContext(entries, dockerfile)
	if err != nil {
		t.Fatalf("testbed: image %s: build context: %v", name, err)
	}
	res, err := cli.ImageBuild(t.Context(), buildCtx, client.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		NoCache:     true,
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{Label: "1"},
	})
	if err != nil {
		t.Fatalf("testbed: building image %s: %v", name, err)
	}
	t.Cleanup(func() { removeImage(t, tag) })
	log, err := readBuildOutput(res.Body)
	_ = res.Body.Close()
	if err != nil {
		t.Fatalf("testbed: building image %s: %v\nbuild output:\n%s", name, err, log)
	}
	return tag
}

// readBuildOutput reads the JSON message stream of a build and returns the
// build's log and its error, if any.
func readBuildOutput(r io.Reader) (string, error) {
	var log strings.Builder
	dec := json.NewDecoder(r)
	for {
		var msg jsonstream.Message
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return log.String(), nil
		} else if err != nil {
			return log.String(), fmt.Errorf("reading build output: %w", err)
		}
		log.WriteString(msg.Stream)
		if msg.Error != nil {
			return log.String(), errors.New(msg.Error.Message)
		}
	}
}

// removeImage removes the image and first any container created from it.
func removeImage(t testing.TB, tag string) {
	t.Helper()
	cli := Docker(t)
	ctx, cancel := cleanupContext()
	defer cancel()
	inspect, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		return // never built
	}
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("ancestor", inspect.ID),
	})
	if err != nil {
		t.Errorf("testbed: cleanup: listing containers of image %s: %v", tag, err)
	}
	for _, c := range list.Items {
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
			t.Errorf("testbed: cleanup: removing container %s of image %s: %v", c.ID[:12], tag, err)
		}
	}
	if _, err := cli.ImageRemove(ctx, tag, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil && !isNotFound(err) {
		t.Errorf("testbed: cleanup: removing image %s: %v", tag, err)
	}
}

// tarContext makes a build context holding the Dockerfile and the entries.
func tarContext(entries []entry, dockerfile string) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile))}); err != nil {
		return nil, err
	}
	if _, err := io.WriteString(tw, dockerfile); err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	for _, e := range entries {
		name := path.Clean(strings.TrimPrefix(e.name, "/"))
		switch {
		case e.dir:
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: e.mode}); err != nil {
				return nil, err
			}
		case e.link != "":
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: e.link, Mode: 0o777}); err != nil {
				return nil, err
			}
		default:
			if err := addFile(tw, name, e.hostFile, e.mode); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}

func addFile(tw *tar.Writer, name, hostFile string, mode int64) error {
	f, err := os.Open(hostFile)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", hostFile)
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: fi.Size()}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// TestappImage builds an image FROM scratch holding the static test/testapp
// as /testapp (ENTRYPOINT ["/testapp"], EXPOSE 8080) and returns its tag.
// See test/testapp for what it serves.
func TestappImage(t testing.TB) string {
	t.Helper()
	return TestappImageWith(t, "testapp", "")
}

// TestappImageWith builds the testapp image named name with the Dockerfile
// lines extra ("VOLUME /data\n") too.
func TestappImageWith(t testing.TB, name, extra string) string {
	t.Helper()
	bin := GoBinary(t, "./test/testapp")
	return BuildImage(t, name, map[string]string{"testapp": bin},
		"FROM scratch\nCOPY testapp /testapp\n"+extra+"EXPOSE 8080\nENTRYPOINT [\"/testapp\"]\n")
}

// busyboxPath is where Debian's busybox-static installs the static busybox.
const busyboxPath = "/bin/busybox"

// BusyboxImage builds an image FROM scratch with Debian's static busybox as
// /bin/busybox, one symlink per applet in /bin, an empty /tmp (mode 1777) and
// PATH=/bin, and returns its tag. It fails when /bin/busybox is missing
// (scripts/test.sh installs busybox-static).
func BusyboxImage(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Fatalf("testbed: %s is missing (install Debian's busybox-static; scripts/test.sh does): %v", busyboxPath, err)
	}
	out, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		t.Fatalf("testbed: %s --list: %v", busyboxPath, err)
	}
	entries := []entry{
		{name: "bin/busybox", hostFile: busyboxPath, mode: 0o755},
		{name: "tmp", dir: true, mode: 0o1777},
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			entries = append(entries, entry{name: "bin/" + applet, link: "busybox"})
		}
	}
	return buildImage(t, "busybox", entries,
		"FROM scratch\nCOPY bin /bin\nCOPY tmp /tmp\nENV PATH=/bin\n")
}

// ImportImage makes an image the way `docker import` does, from a root file
// system holding only files (path in the image -> content, mode 0644), and
// removes it at t.Cleanup. Like every imported image it has no CMD and no
// ENTRYPOINT. The image is tagged dso-test/NAME:<unique>, and the tag is
// returned.
func ImportImage(t testing.TB, name string, files map[string]string) string {
	t.Helper()
	cli := Docker(t)
	tag := fmt.Sprintf("dso-test/%s:%s", strings.ToLower(name), uniqueSuffix())
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(path.Clean(p), "/"), Mode: 0o644, Size: int64(len(files[p]))}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("testbed: image %s: %v", name, err)
		}
		if _, err := io.WriteString(tw, files[p]); err != nil {
			t.Fatalf("testbed: image %s: %v", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("testbed: image %s: %v", name, err)
	}
	res, err := cli.ImageImport(t.Context(), client.ImageImportSource{Source: &buf, SourceName: "-"}, tag, client.ImageImportOptions{})
	if err != nil {
		t.Fatalf("testbed: importing image %s: %v", name, err)
	}
	t.Cleanup(func() { removeImage(t, tag) })
	log, err := readBuildOutput(res)
	_ = res.Close()
	if err != nil {
		t.Fatalf("testbed: importing image %s: %v\n%s", name, err, log)
	}
	return tag
}
