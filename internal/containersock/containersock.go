// Package containersock connects the agent to a unix socket inside a
// container (the init's, the proxy's control) from the host, without a
// `docker exec`: the socket is opened inside the root of the container's
// process, found through /proc/PID, and connected to through the opened
// file. It takes a millisecond where an exec takes tens of them (a process
// made in the container by runc), but needs what an exec does not, so it is
// only a shortcut: Do says when it cannot be taken here (not root, or
// without CAP_SYS_PTRACE for another user's process; the engine on another
// host or in a VM; a symlink on the path; not Linux) and the caller then
// takes the exec.
//
// The path is walked from the container's root one name at a time, without
// following symlinks: one planted in the container (an absolute one
// included) cannot lead out of it, so a hostile image cannot have the agent
// talk to a socket of the host.
package containersock
