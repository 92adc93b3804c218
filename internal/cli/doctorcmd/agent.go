package doctorcmd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dso-project/dso/internal/agentctl"
	"github.com/dso-project/dso/internal/api"
)

const agentTimeout = 5 * time.Second

// checkAgent finds the agent that serves this host (the system agent when
// its lock is held, else the user's local agent), asks its socket for its
// health, and checks the socket's permissions.
func (d *doctor) checkAgent(ctx context.Context) {
	const what = "agent running"
	w, err := agentctl.Serving(d.cfg)
	if err != nil {
		d.add(Finding{Check: what, Status: StatusFail, Detail: err.Error(), Fix: "set HOME or XDG_RUNTIME_DIR"})
		return
	}
	kind, sock := w.Kind, w.Socket
	switch {
	case agentctl.Held(w.Lock):
	case kind == agentctl.System:
		d.add(Finding{Check: what, Status: StatusFail, Detail: "dso.yaml says mode: agent, but the system agent is not running (" + w.Lock + " is not held)",
			Fix: "sudo systemctl start dso-agent (install it first with sudo docker dso bootstrap agent); docker dso system logs says why it stopped"})
		return
	default:
		d.add(Finding{Check: what, Status: StatusWarn, Detail: "no agent runs for this user (local mode): containers started now get no secrets and no rotation",
			Fix: "docker dso up starts the local agent; docker dso agent --local runs it in the foreground"})
		return
	}
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	h, err := api.NewClient(sock).Health(ctx)
	switch {
	case errors.Is(err, api.ErrForbidden):
		d.add(Finding{Check: what, Status: StatusFail, Detail: fmt.Sprintf("the %s agent refused this user on %s: %v", kind, sock, err),
			Fix: "add your user to the dso group (sudo usermod -aG dso $USER) and log in again"})
	case err != nil:
		d.add(Finding{Check: what, Status: StatusFail, Detail: fmt.Sprintf("the %s agent holds its lock but its socket %s does not answer: %v", kind, sock, err),
			Fix: restartFix(kind)})
	case h.Health != api.HealthOK:
		d.add(Finding{Check: what, Status: StatusWarn, Detail: fmt.Sprintf("the %s agent (pid %d, version %s) says %s: %v", kind, h.PID, h.Version, h.Health, h.Problems),
			Fix: "see the problems above; docker dso status shows the secrets that fail"})
	default:
		d.add(Finding{Check: what, Status: StatusOK, Detail: fmt.Sprintf("the %s agent (pid %d, version %s, up since %s) answers on %s", kind, h.PID, h.Version, h.StartedAt.Format(time.RFC3339), sock)})
	}
	d.checkSocket(kind, sock)
	if kind == agentctl.System && err == nil {
		d.checkHostPorts(ctx, sock)
	}
}

// checkHostPorts asks the system agent whether it binds the proxies' host
// ports (`up` asks the same).
func (d *doctor) checkHostPorts(ctx context.Context, sock string) {
	d.add(hostPortsFinding(api.NewClient(sock).Status(ctx)))
}

// hostPortsFinding judges the system agent's status: when it cannot bind
// the proxies' host ports, Docker publishes them, which works but puts
// docker-proxy in front of the proxy for the host's own clients. A unit
// from before the agent needed CAP_SYS_PTRACE and CAP_NET_BIND_SERVICE is
// the usual cause (the agent's note then says what it lacks).
func hostPortsFinding(st api.Status, err error) Finding {
	const what = "proxies' host ports"
	switch {
	case err != nil:
		return Finding{Check: what, Status: StatusWarn, Detail: "the system agent's status: " + err.Error(), Fix: restartFix(agentctl.System)}
	case st.BindsHostPorts:
		return Finding{Check: what, Status: StatusOK, Detail: "the system agent binds them and hands them to the proxies"}
	case strings.Contains(st.HostPortsNote, "lacks"):
		return Finding{Check: what, Status: StatusWarn, Detail: "Docker publishes them: " + st.HostPortsNote,
			Fix: "sudo docker dso bootstrap agent writes dso-agent.service anew with the capabilities it needs, then sudo systemctl restart dso-agent"}
	default:
		return Finding{Check: what, Status: StatusWarn, Detail: "Docker publishes them: " + st.HostPortsNote,
			Fix: "run the system agent on the engine's host, outside any container, for the agent to bind them"}
	}
}

func restartFix(kind string) string {
	if kind == agentctl.System {
		return "sudo systemctl restart dso-agent; docker dso system logs says what went wrong"
	}
	return "docker dso agent stop, then docker dso up starts it again; see ~/.dso/run/agent.log"
}

// checkSocket wants the socket to be 0660, and in group dso for the system
// agent, so that only root, the agent's user and the group may use it.
func (d *doctor) checkSocket(kind, sock string) {
	const what = "agent socket permissions"
	st, err := os.Stat(sock)
	if err != nil {
		d.add(Finding{Check: what, Status: StatusFail, Detail: err.Error(), Fix: restartFix(kind)})
		return
	}
	perm := st.Mode().Perm()
	gid := st.Sys().(*syscall.Stat_t).Gid
	group := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	detail := fmt.Sprintf("%s: mode %04o, group %s", sock, perm, group)
	switch {
	case st.Mode().Type() != fs.ModeSocket:
		d.add(Finding{Check: what, Status: StatusFail, Detail: sock + " is not a socket", Fix: restartFix(kind)})
	case perm&0o007 != 0:
		d.add(Finding{Check: what, Status: StatusFail, Detail: detail + ": any user of this host may talk to the agent",
			Fix: "chmod 0660 " + sock + " (the agent sets 0660 when it starts; restart it)"})
	case kind == agentctl.System && group != api.GroupName:
		d.add(Finding{Check: what, Status: StatusFail, Detail: detail + ": members of group " + api.GroupName + " cannot use it",
			Fix: "sudo docker dso bootstrap agent creates the dso group; then sudo systemctl restart dso-agent"})
	case perm != 0o660:
		d.add(Finding{Check: what, Status: StatusWarn, Detail: detail + ", want 0660", Fix: "chmod 0660 " + sock})
	default:
		d.add(Finding{Check: what, Status: StatusOK, Detail: detail})
	}
}
