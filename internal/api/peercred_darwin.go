package api

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// peerCred asks the kernel who holds the other end of the unix socket fd:
// macOS has LOCAL_PEERCRED (user and groups, the first group the effective
// one) and LOCAL_PEERPID instead of Linux's SO_PEERCRED.
func peerCred(fd int) (Peer, error) {
	c, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return Peer{}, err
	}
	pid, err := unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	if err != nil {
		return Peer{}, err
	}
	if c.Ngroups < 1 {
		return Peer{}, fmt.Errorf("LOCAL_PEERCRED gave no group")
	}
	return Peer{PID: int32(pid), UID: c.Uid, GID: c.Groups[0]}, nil
}
