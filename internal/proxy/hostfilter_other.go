//go:build !linux

package proxy

import (
	"errors"
	"net/netip"
	"os"
)

// NewHostSockets makes host sockets on Linux only, where proxies run.
func NewHostSockets([]netip.Prefix, []netip.Addr, int) ([]*os.File, error) {
	return nil, errors.New("host sockets are made on Linux only")
}
