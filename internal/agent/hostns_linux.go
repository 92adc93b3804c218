package agent

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// initialPIDNamespace is the inode of the host's PID namespace
// (PROC_PID_INIT_INO), where the engine runs and the PIDs it reports are.
const initialPIDNamespace = 0xEFFFFFFC

// handOverHere says whether the agent can bind proxies' host ports and
// hand them over through /proc: it stands in the host's PID namespace,
// where the engine's PIDs name the proxies' processes (checked first: an
// agent in a container lacks more than capabilities), and holds
// CAP_NET_BIND_SERVICE (ports under 1024) and CAP_SYS_PTRACE (a proxy's
// /proc/PID, whose process runs as another user) in its effective set.
func handOverHere() error {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return fmt.Errorf("reading the agent's PID namespace: %w", err)
	}
	if st.Ino != initialPIDNamespace {
		return errors.New("the agent is not in the host's PID namespace, where the engine's PIDs are")
	}
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
