// Package agentctl is the client side of the agent: which agent serves this
// host (the system agent or the user's local one), where its lock, state and
// socket are, the lock that says one runs, starting a local agent on demand
// and dialing its socket. The daemon itself is internal/agent; every command
// (status, up --wait, doctor, agent stop) and the daemon find the agent
// through Locate and Serving here, so they agree on its socket.
package agentctl

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/state"
)

// SystemLock is held by the system agent (systemd, mode agent).
const SystemLock = "/run/dso/agent.lock"

// SystemID names the system agent in the dso.agent label.
const SystemID = "system"

// Kinds of agent.
const (
	System = "system"
	Local  = "local"
)

// Where is one agent: its id (the dso.agent label of the containers it
// serves) and the files it keeps.
type Where struct {
	Kind   string // System or Local
	ID     string
	Lock   string
	State  string
	Socket string
	Log    string // the local agent's log file ("" for the system agent: journald)
}

// LocalDir is where the user-scope agent keeps its lock and log: ~/.dso/run.
func LocalDir() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the home directory: %w", err)
	}
	return filepath.Join(home, ".dso", "run"), nil
}

// LocalID names the local agent of the user whose agent directory is dir:
// several users (or test homes) on one engine each serve their own
// containers only.
func LocalID(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "local-" + hex.EncodeToString(sum[:6])
}

// Locate returns where the system agent (local false) or the user's local
// agent keeps its files. The system agent's socket is agent.socket of cfg
// (default /run/dso/dso.sock); the local agent's is under the user's
// runtime directory (api.LocalSocketPath), since /run/dso is root's.
func Locate(local bool, cfg *config.Config) (Where, error) {
	if !local {
		sock := api.DefaultSocketPath
		if cfg != nil && cfg.Agent.Socket != "" {
			sock = cfg.Agent.Socket
		}
		return Where{Kind: System, ID: SystemID, Lock: SystemLock, State: state.DefaultPath, Socket: sock}, nil
	}
	dir, err := LocalDir()
	if err != nil {
		return Where{}, err
	}
	sock, err := api.LocalSocketPath()
	if err != nil {
		return Where{}, err
	}
	return Where{Kind: Local, ID: LocalID(dir), Lock: filepath.Join(dir, "agent.lock"), State: filepath.Join(dir, "state.db"),
		Socket: sock, Log: filepath.Join(dir, "agent.log")}, nil
}

// Serving returns the agent that serves containers started now: the system
// agent when it runs or cfg says mode agent, else the user's.
func Serving(cfg *config.Config) (Where, error) {
	return Locate(!(Held(SystemLock) || cfg != nil && cfg.Mode == config.ModeAgent), cfg)
}
