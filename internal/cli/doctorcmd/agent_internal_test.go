package doctorcmd

import (
	"errors"
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/api"
)

// TestHostPortsFinding: an agent that binds is ok; one without the unit's
// capabilities is told to rewrite the unit; one elsewhere (a container) to
// run on the engine's host; one that does not answer to restart.
func TestHostPortsFinding(t *testing.T) {
	for _, tc := range []struct {
		st        api.Status
		err       error
		status    Status
		fix, note string
	}{
		{st: api.Status{BindsHostPorts: true}, status: StatusOK},
		{st: api.Status{HostPortsNote: "the agent lacks CAP_SYS_PTRACE"}, status: StatusWarn, fix: "bootstrap agent writes dso-agent.service anew", note: "lacks CAP_SYS_PTRACE"},
		{st: api.Status{HostPortsNote: "the agent is not in the host's PID namespace, where the engine's PIDs are"}, status: StatusWarn, fix: "outside any container", note: "PID namespace"},
		{err: errors.New("connection refused"), status: StatusWarn, fix: "systemctl restart dso-agent", note: "connection refused"},
	} {
		f := hostPortsFinding(tc.st, tc.err)
		if f.Status != tc.status || !strings.Contains(f.Fix, tc.fix) || !strings.Contains(f.Detail, tc.note) {
			t.Errorf("%+v, %v: %+v", tc.st, tc.err, f)
		}
	}
}
