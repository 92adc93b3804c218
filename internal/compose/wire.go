package compose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/secretref"
)

// tmpfsSpec is the tmpfs that holds the init's socket and the secret files:
// owned by the user the service runs as, and closed to everyone else. When a
// file secret has an owner or mode of its own, others may pass through it
// (0711: not list it) to reach the files their owner and mode let them read;
// the init's socket stays 0600. (The engine keeps uid and gid across
// restarts but not a mode alone, so the owner must be numeric and right.)
func tmpfsSpec(uid, gid int, uses []Use) string {
	mode := "0700"
	if hasPerm(uses) {
		mode = "0711"
	}
	return fmt.Sprintf("%s:uid=%d,gid=%d,mode=%s,size=64m", initproc.RunDir, uid, gid, mode)
}

// hasPerm reports whether a file secret of uses sets its own owner or mode.
func hasPerm(uses []Use) bool {
	for _, u := range uses {
		if u.Ref.File && !u.Ref.Perm.IsZero() {
			return true
		}
	}
	return false
}

// checkPerms refuses owners that the service's user cannot give: only root
// can give a file to another user or group (the init writes the files as
// the service's user).
func checkPerms(sp ServicePlan) error {
	if sp.UID == 0 {
		return nil
	}
	var errs []error
	for _, u := range sp.Uses {
		p := u.Ref.Perm
		if p.HasUID && int(p.UID) != sp.UID || p.HasGID && int(p.GID) != sp.GID {
			errs = append(errs, fmt.Errorf("%s: the file's owner %s needs the service to run as root, but it runs as %d:%d (only root can give a file to another user or group; drop uid and gid, or run as root and drop privileges in the entrypoint)", u, ownerText(p, sp), sp.UID, sp.GID))
		}
	}
	return errors.Join(errs...)
}

func ownerText(p secretref.Perm, sp ServicePlan) string {
	uid, gid := strconv.Itoa(sp.UID), strconv.Itoa(sp.GID)
	if p.HasUID {
		uid = strconv.FormatUint(uint64(p.UID), 10)
	}
	if p.HasGID {
		gid = strconv.FormatUint(uint64(p.GID), 10)
	}
	return uid + ":" + gid
}

// Wiring is what the override needs besides the project.
type Wiring struct {
	InitBinary string // host path of dso-init, bind-mounted read-only
	Agent      string // the agent that serves the containers (dso.agent label)
	// Strategy is how a service rotates. DSO's proxy owns the host ports
	// of a rolling service (a port it cannot own is an error) and of a
	// restart service whose ports it can all own (else Docker publishes
	// them, as compose would).
	Strategy func(svc types.ServiceConfig) config.Strategy
	// BindHostPorts says the agent binds the fixed host ports of the
	// proxies itself and hands the sockets to them (it runs as root on the
	// engine's host): clients then reach a proxy without Docker's
	// publishing in between. Else Docker publishes them onto the proxy.
	BindHostPorts bool
}

// Image is what the wiring needs of a service's image.
type Image struct {
	Entrypoint []string
	Cmd        []string
	User       string
	Exposed    []string // "80/tcp"
}

// Images reads the image a service runs (from the engine, after any build
// or pull), and turns a user of that image ("app", "app:staff", "1000") into
// numeric ids.
type Images interface {
	Config(ctx context.Context, svc types.ServiceConfig) (Image, error)
	IDs(ctx context.Context, svc types.ServiceConfig, user string) (uid, gid int, err error)
}

// ServicePlan is how one service is wired.
type ServicePlan struct {
	Name       string
	Entrypoint []string // the service's own, run by the init
	Command    []string
	User       string // as the service or image names it ("" is root)
	UID, GID   int    // numeric, owner of the secrets tmpfs
	Uses       []Use
	// Proxy owns the service's host ports (rolling services with ports).
	Proxy *ProxyPlan
}

// Plan is the wiring of a project.
type Plan struct {
	Project  string
	Wiring   Wiring
	Services []ServicePlan
}

// NewPlan decides, for each service with uses, the entrypoint and command the
// init must run: the service's own, else the image's (an entrypoint set in
// the service clears the image's command, as compose does).
func NewPlan(ctx context.Context, p *types.Project, uses []Use, w Wiring, images Images) (*Plan, error) {
	by := map[string][]Use{}
	for _, u := range uses {
		by[u.Service] = append(by[u.Service], u)
	}
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Strings(names)
	plan := &Plan{Project: p.Name, Wiring: w}
	for _, n := range names {
		svc, err := p.GetService(n)
		if err != nil {
			return nil, err
		}
		img, err := images.Config(ctx, svc)
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", n, err)
		}
		sp := ServicePlan{Name: n, Entrypoint: svc.Entrypoint, Command: svc.Command, User: svc.User, Uses: by[n]}
		if svc.Entrypoint == nil {
			sp.Entrypoint = img.Entrypoint
			if svc.Command == nil {
				sp.Command = img.Cmd
			}
		}
		if len(sp.Entrypoint)+len(sp.Command) == 0 {
			return nil, fmt.Errorf("service %q has no entrypoint or command, in the compose file or its image", n)
		}
		if sp.User == "" {
			sp.User = img.User
		}
		if sp.UID, sp.GID, err = userIDs(ctx, images, svc, sp.User); err != nil {
			return nil, fmt.Errorf("service %q: user %q: %w", n, sp.User, err)
		}
		if err := checkPerms(sp); err != nil {
			return nil, err
		}
		if w.Strategy != nil {
			if st := w.Strategy(svc); st == config.StrategyRolling || st == config.StrategyRestart {
				if err := checkJoiners(p, svc, st); err != nil {
					return nil, err
				}
				if sp.Proxy, err = planProxy(p, svc, img, st == config.StrategyRolling); err != nil {
					return nil, err
				}
			}
		}
		plan.Services = append(plan.Services, sp)
	}
	if err := checkClaims(p, plan.Services); err != nil {
		return nil, err
	}
	return plan, nil
}

// checkJoiners fails when another service shares a namespace of svc
// (network_mode, pid or ipc "service:NAME"): a rotation that replaces svc's
// container would remove those namespaces from under it.
func checkJoiners(p *types.Project, svc types.ServiceConfig, st config.Strategy) error {
	ref := "service:" + svc.Name
	for _, n := range slices.Sorted(maps.Keys(p.Services)) {
		other := p.Services[n]
		for _, m := range []struct{ key, value string }{{"network_mode", other.NetworkMode}, {"pid", other.Pid}, {"ipc", other.Ipc}} {
			if m.value == ref {
				return fmt.Errorf("service %q: service %q joins it (%s: %q), and strategy %s replaces %s's container, which would leave %s in the namespaces of a removed container: give %s the label %s: signal (or none)",
					svc.Name, n, m.key, m.value, st, svc.Name, n, svc.Name, LabelStrategy)
			}
		}
	}
	return nil
}

// Override returns the compose file, to be read after the project's own
// files, that wires the planned services. It holds references only, never
// a value. The host ports of a service behind a proxy move to the proxy
// (compose's !reset tag clears the service's own).
func (pl *Plan) Override() ([]byte, error) {
	type service struct {
		Entrypoint []string          `yaml:"entrypoint"`
		Command    []string          `yaml:"command,omitempty"`
		Volumes    []Volume          `yaml:"volumes"`
		Tmpfs      []string          `yaml:"tmpfs"`
		Labels     map[string]string `yaml:"labels"`
	}
	services := map[string]any{}
	for _, sp := range pl.Services {
		refs := map[string]string{}
		for _, u := range sp.Uses {
			refs[u.Var] = u.Ref.String()
		}
		refsJSON, err := json.Marshal(refs)
		if err != nil {
			return nil, err
		}
		labels := map[string]string{LabelManaged: "true", LabelRefs: string(refsJSON), LabelAgent: pl.Wiring.Agent}
		s := service{
			Entrypoint: append([]string{initproc.InitPath, "--"}, sp.Entrypoint...),
			Command:    sp.Command,
			Volumes:    []Volume{{Type: "bind", Source: pl.Wiring.InitBinary, Target: initproc.InitPath, ReadOnly: true}},
			Tmpfs:      []string{tmpfsSpec(sp.UID, sp.GID, sp.Uses)},
			Labels:     labels,
		}
		escapeAll(s.Entrypoint)
		escapeAll(s.Command)
		for k, v := range s.Labels {
			s.Labels[k] = Escape(v)
		}
		s.Volumes[0].Source = Escape(s.Volumes[0].Source)
		services[sp.Name] = s
		if sp.Proxy != nil {
			services[sp.Proxy.Service] = pl.proxyService(sp)
		}
	}
	var doc yaml.Node
	if err := doc.Encode(map[string]any{"services": services}); err != nil {
		return nil, err
	}
	for _, sp := range pl.Services {
		if sp.Proxy != nil {
			svc := mapValue(mapValue(&doc, "services"), sp.Name)
			svc.Content = append(svc.Content,
				&yaml.Node{Kind: yaml.ScalarNode, Value: "ports"},
				&yaml.Node{Kind: yaml.SequenceNode, Tag: "!reset", Style: yaml.FlowStyle})
		}
	}
	return yaml.Marshal(&doc)
}

// mapValue returns the value of key in mapping node n.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// Volume is a volume of a service in an override.
type Volume struct {
	Type     string `yaml:"type"`
	Source   string `yaml:"source"`
	Target   string `yaml:"target"`
	ReadOnly bool   `yaml:"read_only"`
}

// Escape protects a literal from compose's interpolation of an override.
func Escape(s string) string { return strings.ReplaceAll(s, "$", "$$") }

func escapeAll(ss []string) {
	for i := range ss {
		ss[i] = Escape(ss[i])
	}
}

// userIDs turns "uid[:gid]" or names into numbers, asking the image for
// names (and for the group of a user given alone).
func userIDs(ctx context.Context, images Images, svc types.ServiceConfig, user string) (int, int, error) {
	if user == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	uid, uerr := strconv.Atoi(u)
	gid, gerr := strconv.Atoi(g)
	if uerr == nil && uid >= 0 && (hasGroup && gerr == nil && gid >= 0) {
		return uid, gid, nil
	}
	return images.IDs(ctx, svc, user)
}
