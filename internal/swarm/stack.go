// Package swarm takes DSO to Docker Swarm. A stack's secret references
// become driver-backed Swarm secrets whose names carry the secret's version
// (stack.go: the plan and the override `docker stack deploy` reads); the
// agent on a manager rotates a service by swapping in the secret of the new
// version and letting Swarm roll its tasks (rotate.go); status.go reports
// what the tasks hold. The driver that gives Swarm the values is
// internal/swarm/driver. Nothing here ever holds a secret value.
package swarm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/swarm"
	"gopkg.in/yaml.v3"

	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/swarm/driver"
)

// InitHostPath is where the packages install dso-init on every node; a
// Swarm task bind-mounts it from there.
const InitHostPath = "/usr/libexec/docker/cli-plugins/dso-init"

// Secret is one driver-backed Swarm secret: a reference at a version.
type Secret struct {
	Name    string        // the object's name, which carries the version
	Ref     secretref.Ref // canonical: project-qualified, no file owner or mode
	Version string
	Stack   string
}

// Canonical is the reference a Swarm secret holds for a use: dso:// and
// dsofile:// of the same secret share one object.
func Canonical(r secretref.Ref) secretref.Ref {
	return secretref.Ref{Provider: r.Provider, Path: r.Path, Key: r.Key}
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// NewSecret names the secret of ref at version in stack:
// STACK_dso_LEAF_HASH, where HASH is taken over the reference and the
// version (Swarm's names are at most 64 characters).
func NewSecret(stack string, ref secretref.Ref, version string) Secret {
	ref = Canonical(ref)
	sum := sha256.Sum256([]byte(ref.String() + "\x00" + version))
	leaf := ref.Path[strings.LastIndex(ref.Path, "/")+1:]
	if ref.Key != "" {
		leaf += "." + ref.Key
	}
	leaf = strings.Trim(unsafeName.ReplaceAllString(leaf, "_"), "_.-")
	hash := hex.EncodeToString(sum[:])[:12]
	prefix := stack + "_dso_"
	if room := 64 - len(prefix) - len(hash) - 1; len(leaf) > room {
		leaf = leaf[:max(room, 0)]
	}
	name := prefix + leaf + "_" + hash
	if leaf == "" {
		name = prefix + hash
	}
	return Secret{Name: name, Ref: ref, Version: version, Stack: stack}
}

// Spec is the Swarm spec of s: labels and driver, no data.
func (s Secret) Spec() swarm.SecretSpec {
	return swarm.SecretSpec{
		Annotations: swarm.Annotations{Name: s.Name, Labels: map[string]string{
			driver.LabelRef: s.Ref.String(), driver.LabelVersion: s.Version, driver.LabelStack: s.Stack,
		}},
		Driver: &swarm.Driver{Name: driver.Name},
	}
}

// FromSpec reads a DSO secret back from its spec; ok is false for a
// secret DSO did not make (the driver's own reading of its labels).
func FromSpec(spec swarm.SecretSpec) (Secret, bool) {
	if spec.Driver == nil || spec.Driver.Name != driver.Name {
		return Secret{}, false
	}
	ref, err := driver.Ref(spec.Labels)
	if err != nil {
		return Secret{}, false
	}
	return Secret{Name: spec.Name, Ref: ref, Version: spec.Labels[driver.LabelVersion], Stack: spec.Labels[driver.LabelStack]}, true
}

// Target is the file name, under /run/secrets, of variable v's secret.
func Target(v string) string { return initproc.SwarmTargetPrefix + v }

// Mount is how a service mounts one secret for one variable.
type Mount struct {
	Var    string
	Secret Secret
	UID    string
	GID    string
	Mode   os.FileMode
}

// Reference is the service's Swarm reference of m (the secret's ID is
// filled in by the engine from its name when deployed by a stack).
func (m Mount) Reference(id string) *swarm.SecretReference {
	return &swarm.SecretReference{
		SecretID: id, SecretName: m.Secret.Name,
		File: &swarm.SecretReferenceFileTarget{Name: Target(m.Var), UID: m.UID, GID: m.GID, Mode: m.Mode},
	}
}

// Service is how one service of a stack is wired.
type Service struct {
	compose.ServicePlan
	Mounts []Mount
}

// Plan is the wiring of a stack.
type Plan struct {
	Stack    string
	InitPath string // dso-init on the nodes (InitHostPath unless told)
	Secrets  []Secret
	Services []Service
}

// NewPlan wires each planned service: every use becomes a mount of the
// secret of its reference at the version found, owned by the service's
// user, mode 0400 (or the reference's own owner and mode).
func NewPlan(stack string, services []compose.ServicePlan, versions map[secretref.Ref]string) (*Plan, error) {
	pl := &Plan{Stack: stack, InitPath: InitHostPath}
	seen := map[string]bool{}
	for _, sp := range services {
		s := Service{ServicePlan: sp}
		for _, u := range sp.Uses {
			v, ok := versions[u.Ref]
			if !ok {
				return nil, fmt.Errorf("%s: no version found", u)
			}
			sec := NewSecret(stack, u.Ref, v)
			if !seen[sec.Name] {
				seen[sec.Name] = true
				pl.Secrets = append(pl.Secrets, sec)
			}
			m := Mount{Var: u.Var, Secret: sec, UID: strconv.Itoa(sp.UID), GID: strconv.Itoa(sp.GID), Mode: 0o400}
			if p := u.Ref.Perm; u.Ref.File {
				if p.HasUID {
					m.UID = strconv.FormatUint(uint64(p.UID), 10)
				}
				if p.HasGID {
					m.GID = strconv.FormatUint(uint64(p.GID), 10)
				}
				if p.HasMode {
					m.Mode = os.FileMode(p.Mode)
				}
			}
			s.Mounts = append(s.Mounts, m)
		}
		pl.Services = append(pl.Services, s)
	}
	sort.Slice(pl.Secrets, func(i, j int) bool { return pl.Secrets[i].Name < pl.Secrets[j].Name })
	return pl, nil
}

// Override returns the compose file, read by `docker stack deploy` after
// the stack's own files, that wires the planned services: dso-init
// bind-mounted from the node and run in front of the service's entrypoint,
// each secret mounted at /run/secrets/dso.VAR, the secrets declared
// external (DSO makes them, with the driver and labels), and the service
// labelled as DSO's. It holds references only, never a value.
func (pl *Plan) Override() ([]byte, error) {
	type secretUse struct {
		Source string `yaml:"source"`
		Target string `yaml:"target"`
		UID    string `yaml:"uid"`
		GID    string `yaml:"gid"`
		Mode   uint32 `yaml:"mode"` // decimal: YAML readers disagree on 0400
	}
	type deploy struct {
		Labels map[string]string `yaml:"labels"`
	}
	type service struct {
		Entrypoint []string         `yaml:"entrypoint"`
		Command    []string         `yaml:"command,omitempty"`
		Volumes    []compose.Volume `yaml:"volumes"`
		Secrets    []secretUse      `yaml:"secrets"`
		Deploy     deploy           `yaml:"deploy"`
	}
	type external struct {
		External bool   `yaml:"external"`
		Name     string `yaml:"name"`
	}
	services := map[string]service{}
	for _, s := range pl.Services {
		svc := service{
			Entrypoint: escapeAll(append([]string{initproc.InitPath, "swarm", "--"}, s.Entrypoint...)),
			Command:    escapeAll(s.Command),
			Volumes:    []compose.Volume{{Type: "bind", Source: compose.Escape(pl.InitPath), Target: initproc.InitPath, ReadOnly: true}},
			Deploy:     deploy{Labels: map[string]string{compose.LabelManaged: "true", driver.LabelStack: pl.Stack}},
		}
		for _, m := range s.Mounts {
			svc.Secrets = append(svc.Secrets, secretUse{Source: m.Secret.Name, Target: Target(m.Var), UID: m.UID, GID: m.GID, Mode: uint32(m.Mode)})
		}
		services[s.Name] = svc
	}
	secrets := map[string]external{}
	for _, s := range pl.Secrets {
		secrets[s.Name] = external{External: true, Name: s.Name}
	}
	return yaml.Marshal(map[string]any{"version": "3.8", "services": services, "secrets": secrets})
}

func escapeAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = compose.Escape(s)
	}
	return out
}
