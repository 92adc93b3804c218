package deliver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"golang.org/x/sys/unix"

	"github.com/dso-project/dso/internal/initproc"
)

// direct hands data to the init of container through the init's own
// socket, reached from the host: the socket is opened inside the
// container's root, found through /proc/PID of the container's init, and
// connected to through the opened file. It takes a millisecond where a
// `docker exec` takes tens of them (a process made in the container by
// runc). It needs what `docker exec` does not, so it is only a shortcut:
// handled is false, and Send takes the exec, whenever this way is closed
// here: not root (no access to another user's /proc/PID/root), the engine
// on another host or in a VM (the PID is not the container's here: the
// process's cgroup must name the container), no openat2(2) (Linux < 5.6),
// or a socket path that does not resolve to a socket inside the container.
//
// The path is resolved with RESOLVE_IN_ROOT: a symlink in the container
// (an absolute one included) cannot lead out of the container's root, so a
// hostile image cannot have the values sent to a socket of the host.
func direct(ctx context.Context, c container.InspectResponse, data []byte, wait time.Duration) (answer []byte, handled bool, err error) {
	if c.State == nil || !c.State.Running || c.State.Pid <= 0 {
		return nil, false, nil
	}
	proc, err := unix.Open("/proc/"+strconv.Itoa(c.State.Pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, nil
	}
	defer unix.Close(proc)
	// The descriptor stays with that process: should the PID be reused
	// later, what is opened through it fails instead of reaching another.
	// Its cgroup says whether it is this container's process at all (the
	// inspection may be a moment old, the engine on another host).
	if !inContainer(proc, c.ID) {
		return nil, false, nil
	}
	root, err := unix.Openat(proc, "root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false, nil
	}
	defer unix.Close(root)

	rel := strings.TrimPrefix(initproc.SocketPath, "/")
	deadline := time.Now().Add(wait)
	for {
		conn, err := dialIn(root, rel)
		if err == nil {
			defer conn.Close()
			// A workload's listener may never answer: ctx ends the wait.
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			answer, err := initproc.Exchange(conn, data)
			if err != nil && ctx.Err() != nil {
				err = ctx.Err()
			}
			return answer, true, err
		}
		// The init may not listen yet (it has just started): wait for it
		// as `dso-init deliver` would, while its process lives.
		waiting := errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED)
		if !waiting || !alive(proc) || time.Now().After(deadline) {
			return nil, false, nil
		}
		select {
		case <-ctx.Done():
			return nil, true, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// dialIn connects to the unix socket at rel inside root.
func dialIn(root int, rel string) (*net.UnixConn, error) {
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%s is not a socket", rel)
	}
	// The magic link names exactly the file opened above.
	return net.DialUnix("unix", nil, &net.UnixAddr{Name: "/proc/self/fd/" + strconv.Itoa(fd), Net: "unix"})
}

// inContainer reports whether the process of the /proc/PID descriptor proc
// is in the cgroup of the container with the full ID id.
func inContainer(proc int, id string) bool {
	if len(id) != 64 {
		return false
	}
	fd, err := unix.Openat(proc, "cgroup", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	n, err := unix.Read(fd, buf)
	if err != nil || n <= 0 {
		return false
	}
	return bytes.Contains(buf[:n], []byte(id))
}

// alive reports whether the process of the /proc/PID descriptor proc runs.
func alive(proc int) bool {
	var st unix.Stat_t
	return unix.Fstatat(proc, "stat", &st, 0) == nil
}
