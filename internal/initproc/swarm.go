package initproc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dso-project/dso/internal/secretref"
)

// SwarmTargetPrefix names the Swarm secret file of variable VAR inside a
// task: /run/secrets/dso.VAR.
const SwarmTargetPrefix = "dso."

// SwarmSecretsDir is where Swarm mounts a task's secret files (the
// daemon's tmpfs).
const SwarmSecretsDir = "/run/secrets"

// SwarmEnv returns env with every variable whose value is a DSO reference
// replaced from the Swarm secret file of that variable in dir: its contents
// for dso://, its path for dsofile://. A missing or unreadable file is an
// error naming the variable, never a value.
func SwarmEnv(env []string, dir string) ([]string, error) {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		if !secretref.IsRef(val) {
			out = append(out, kv)
			continue
		}
		ref, err := secretref.Parse(val)
		if err != nil {
			return nil, fmt.Errorf("variable %s: %w", name, err)
		}
		path := filepath.Join(dir, SwarmTargetPrefix+name)
		if ref.File {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("variable %s: the Swarm secret file %s is missing (deploy the stack with `docker dso stack deploy`): %w", name, path, err)
			}
			out = append(out, name+"="+path)
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("variable %s: the Swarm secret file %s is missing (deploy the stack with `docker dso stack deploy`): %w", name, path, err)
		}
		out = append(out, name+"="+string(data))
		clear(data)
	}
	return out, nil
}

// ExecSwarm runs argv in place of the init with the environment SwarmEnv
// gives. It returns only on failure, with the init's exit code.
func ExecSwarm(argv []string, stderr *os.File) int {
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "dso-init: "+format+"\n", a...) }
	if len(argv) == 0 {
		logf("no command to run: the service has no entrypoint or command")
		return ExitSetup
	}
	env, err := SwarmEnv(os.Environ(), SwarmSecretsDir)
	if err != nil {
		logf("%v", err)
		return ExitSetup
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		logf("%v", err)
		return ExitNotFound
	}
	err = syscall.Exec(path, argv, env)
	logf("exec %s: %v", argv[0], err)
	return ExitNotFound
}
