package api

import "golang.org/x/sys/unix"

// peerCred asks the kernel who holds the other end of the unix socket fd
// (SO_PEERCRED).
func peerCred(fd int) (Peer, error) {
	c, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Peer{}, err
	}
	return Peer{PID: c.Pid, UID: c.Uid, GID: c.Gid}, nil
}
