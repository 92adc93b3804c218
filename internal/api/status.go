// Package api serves the agent's two APIs and holds the client the CLI
// uses. The REST API (127.0.0.1:8471 by default) has GET /health,
// GET /metrics, GET /events (server-sent events) and an authenticated
// POST /webhook; /health alone is open to anonymous callers by default,
// requests are rate limited per client after authentication, and a token
// is required when it is bound beyond loopback. The local API is HTTP+JSON on a unix socket whose
// callers are authorized by their kernel credentials (SO_PEERCRED): root,
// the agent's own user, and members of the dso group. The agent plugs its
// data in through small functions (StatusSource, Trigger); no response ever
// holds a secret value.
package api

import (
	"context"
	"time"

	"github.com/dso-project/dso/internal/state"
)

// Status is the agent's state as `docker dso status` shows it.
type Status struct {
	Agent      AgentStatus       `json:"agent"`
	Secrets    []SecretStatus    `json:"secrets"`
	Containers []ContainerStatus `json:"containers"`
	// Waiting are started containers whose secrets are late, and why.
	Waiting   []WaitingStatus  `json:"waiting,omitempty"`
	Rotations []RotationStatus `json:"rotations"`
	// Swarm are the services of Swarm stacks that mount DSO secrets, on a
	// manager.
	Swarm []SwarmService `json:"swarm,omitempty"`
	// BindsHostPorts says that the agent binds the host ports of the
	// proxies it serves and hands them over, rather than Docker publishing
	// them: `up` asks the system agent. HostPortsNote says why not.
	BindsHostPorts bool   `json:"binds_host_ports,omitempty"`
	HostPortsNote  string `json:"host_ports_note,omitempty"`
}

// SwarmService is a Swarm service that mounts DSO secrets.
type SwarmService struct {
	Stack string `json:"stack"`
	Name  string `json:"name"`
	// Update is the state of Swarm's rolling update ("updating" while a
	// rotation rolls its tasks; "" when it was never updated).
	Update        string      `json:"update,omitempty"`
	UpdateMessage string      `json:"update_message,omitempty"`
	Tasks         []SwarmTask `json:"tasks"`
}

// SwarmTask is one running or starting task and the versions it holds.
type SwarmTask struct {
	ID      string            `json:"id"`
	Slot    int               `json:"slot"`
	Node    string            `json:"node"`
	State   string            `json:"state"`
	Secrets map[string]string `json:"secrets"` // reference -> version
}

// Health values.
const (
	HealthOK       = "ok"
	HealthDegraded = "degraded"
	HealthStarting = "starting"
)

// AgentStatus is the agent's own health.
type AgentStatus struct {
	Health    string    `json:"health"`
	Version   string    `json:"version"`
	Mode      string    `json:"mode"` // agent or local
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	// Problems says why Health is not ok, one line each.
	Problems []string `json:"problems,omitempty"`
}

// SecretStatus is one watched secret.
type SecretStatus struct {
	Name      string        `json:"name"`
	Provider  string        `json:"provider,omitempty"`
	Version   string        `json:"version"`
	LastCheck time.Time     `json:"last_check,omitzero"`
	NextCheck time.Time     `json:"next_check,omitzero"`
	Interval  time.Duration `json:"interval_ns,omitempty"`
	Failing   bool          `json:"failing,omitempty"`
}

// ContainerStatus is one managed container and the versions it holds.
type ContainerStatus struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Project  string            `json:"project,omitempty"`
	Service  string            `json:"service,omitempty"`
	Strategy string            `json:"strategy,omitempty"`
	Secrets  map[string]string `json:"secrets"` // secret name -> version held
	// FromCache are the secrets it got from the agent's cache while their
	// provider failed: secret name -> when the provider last confirmed the
	// value. An entry goes once the provider confirms the version again.
	FromCache map[string]time.Time `json:"from_cache,omitempty"`
}

// WaitingStatus is a started container whose delivery is being retried.
type WaitingStatus struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Project  string    `json:"project,omitempty"`
	Service  string    `json:"service,omitempty"`
	Since    time.Time `json:"since"`
	Deadline time.Time `json:"deadline"` // when its init gives up
	Attempts int       `json:"attempts"`
	Reason   string    `json:"reason"` // which provider and what failed; never a value
}

// RotationStatus is one entry of the rotation journal, as the agent's
// state store keeps it (names and ids, never a value).
type RotationStatus = state.Rotation

// StatusSource returns the agent's current status.
type StatusSource func(ctx context.Context) (Status, error)

// HealthSource returns the agent's health.
type HealthSource func(ctx context.Context) AgentStatus

// Trigger asks for an immediate check of the named secrets, or of all of
// them when names is empty. It returns an error naming an unknown secret.
type Trigger func(names []string) error
