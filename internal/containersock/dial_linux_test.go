package containersock

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestInContainer(t *testing.T) {
	proc, err := unix.Open("/proc/self", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(proc)
	if inContainer(proc, strings.Repeat("ab", 32)) {
		t.Error("this process was taken for a container's")
	}
	if inContainer(proc, "") {
		t.Error("an empty ID matched")
	}
}

// TestDialInFollowsNoSymlink: the socket is reached through real
// directories only; a symlink on the way, to a directory or to the socket
// itself, and ".." end the walk.
func TestDialInFollowsNoSymlink(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "run/dso"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(root, "run/dso/s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for link, to := range map[string]string{"link": "run", "run/dso/link.sock": "s.sock"} {
		if err := os.Symlink(to, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	c, err := dialIn(fd, "run/dso/s.sock")
	if err != nil {
		t.Fatalf("the socket itself: %v", err)
	}
	c.Close()
	for _, rel := range []string{"link/dso/s.sock", "run/dso/link.sock", "run/../run/dso/s.sock", "run//dso/s.sock"} {
		if c, err := dialIn(fd, rel); err == nil {
			c.Close()
			t.Errorf("%s was followed", rel)
		}
	}
}
