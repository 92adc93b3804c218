package containersock

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
)

// Do connects to the unix socket at path (absolute, in the container) of
// c, a container as inspected just before, and runs exchange on the
// connection. A socket not there yet, or not listening (the process has
// just started), is waited for up to wait while the process lives. The end
// of ctx closes the connection (a workload's listener may never answer),
// and the error is then ctx's. ok is false when this way cannot be taken:
// the caller takes the exec instead.
func Do(ctx context.Context, c container.InspectResponse, path string, wait time.Duration, exchange func(*net.UnixConn) error) (ok bool, err error) {
	conn, ok, err := dial(ctx, c, path, wait)
	if !ok || err != nil {
		return ok, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := exchange(conn); err != nil {
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		return true, err
	}
	return true, nil
}

// dial connects to the socket for Do; with ok true, err is ctx's end.
func dial(ctx context.Context, c container.InspectResponse, path string, wait time.Duration) (conn *net.UnixConn, ok bool, err error) {
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

	rel := strings.TrimPrefix(path, "/")
	deadline := time.Now().Add(wait)
	for {
		conn, err := dialIn(root, rel)
		if err == nil {
			return conn, true, nil
		}
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

// dialIn connects to the unix socket at rel inside root. The path is
// walked one name at a time with O_NOFOLLOW: a symlink on the way (one the
// workload planted, an absolute one included) ends the walk instead of
// leading out of the container, and so does "..". (openat2's
// RESOLVE_IN_ROOT would follow symlinks within the root, but systemd
// answers it ENOSYS under RestrictSUIDSGID=, which the agent's unit sets,
// as kernels before 5.6 do.)
func dialIn(root int, rel string) (*net.UnixConn, error) {
	names := strings.Split(rel, "/")
	fd := root
	for i, name := range names {
		if name == "" || name == "." || name == ".." {
			return nil, fmt.Errorf("%s: not a plain path", rel)
		}
		flags := unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i < len(names)-1 {
			flags |= unix.O_DIRECTORY
		}
		next, err := unix.Openat(fd, name, flags, 0)
		if fd != root {
			unix.Close(fd)
		}
		if err != nil {
			return nil, err
		}
		fd = next
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
