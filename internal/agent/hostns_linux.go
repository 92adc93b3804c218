package agent

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// capsHeld says whether the agent holds, in its effective set, the
// capabilities it needs to bind proxies' host ports and hand them over:
// CAP_NET_BIND_SERVICE for ports under 1024, CAP_SYS_PTRACE to open a
// proxy's /proc/PID, whose process runs as another user.
func capsHeld() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("reading the agent's capabilities: %w", err)
	}
	var missing []string
	for _, c := range []struct {
		n    int
		name string
	}{{unix.CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"}, {unix.CAP_SYS_PTRACE, "CAP_SYS_PTRACE"}} {
		if data[c.n/32].Effective&(1<<(c.n%32)) == 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return errors.New("the agent lacks " + strings.Join(missing, " and "))
	}
	return nil
}
