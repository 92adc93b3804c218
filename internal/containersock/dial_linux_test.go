package containersock

import (
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
