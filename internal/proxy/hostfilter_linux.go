package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// skfNetOff is the base of a classic BPF load relative to the packet's
// network header (SKF_NET_OFF, which x/sys does not define).
const skfNetOff = 0xfff00000

// NewHostSockets makes n unconnected, non-blocking TCP/IPv4 sockets in the
// caller's network namespace, for a proxy's supply (see hostSockets). Each
// carries a socket filter, locked so that no one can take it off or
// replace it, which drops every packet whose source lies outside prefixes
// or is one of excluded (the host's own addresses on those networks, their
// gateways): a connection to any other address never completes, and
// neither does one from such an address to the socket were it made to
// listen.
func NewHostSockets(prefixes []netip.Prefix, excluded []netip.Addr, n int) ([]*os.File, error) {
	prog, err := sourceFilter(prefixes, excluded)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for range n {
		f, err := newHostSocket(prog)
		if err != nil {
			CloseFiles(files)
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

func newHostSocket(prog []unix.SockFilter) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attaching the socket filter: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_LOCK_FILTER, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("locking the socket filter: %w", err)
	}
	return os.NewFile(uintptr(fd), "host socket"), nil
}

// sourceFilter is a classic BPF program that accepts a packet whose IPv4
// source address lies within one of prefixes and is none of excluded, and
// drops any other.
func sourceFilter(prefixes []netip.Prefix, excluded []netip.Addr) ([]unix.SockFilter, error) {
	if len(prefixes) == 0 || len(prefixes) > MaxPrefixes || len(excluded) > MaxPrefixes {
		return nil, fmt.Errorf("host sockets: 1 to %d prefixes and at most as many excluded addresses, not %d and %d", MaxPrefixes, len(prefixes), len(excluded))
	}
	e, n := len(excluded), len(prefixes)
	// The drop is at 1+e+3n, the accept right after it.
	load := unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfNetOff + 12} // the source address
	prog := []unix.SockFilter{load}
	for k, a := range excluded {
		if !a.Is4() {
			return nil, errors.New("host sockets: IPv4 addresses only")
		}
		b := a.As4()
		prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: binary.BigEndian.Uint32(b[:]), Jt: uint8(e + 3*n - 1 - k)})
	}
	for i, p := range prefixes {
		if !p.Addr().Is4() {
			return nil, errors.New("host sockets: IPv4 prefixes only")
		}
		a := p.Masked().Addr().As4()
		prog = append(prog,
			load,
			unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: ^uint32(0) << (32 - p.Bits())},
			unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: binary.BigEndian.Uint32(a[:]), Jt: uint8(3*(n-i) - 2)},
		)
	}
	return append(prog,
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0},
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: ^uint32(0)},
	), nil
}
