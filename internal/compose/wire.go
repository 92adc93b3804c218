package compose

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/dso-project/dso/internal/initproc"
)

// tmpfsSpec is the tmpfs that holds the init's socket and the secret files:
// owned by the user the service runs as, and closed to everyone else. (The
// engine keeps uid and gid across restarts but not a mode alone, so the
// owner must be numeric and right.)
func tmpfsSpec(uid, gid int) string {
	return fmt.Sprintf("%s:uid=%d,gid=%d,mode=0700,size=64m", initproc.RunDir, uid, gid)
}

// Wiring is what the override needs besides the project.
type Wiring struct {
	InitBinary string // host path of dso-init, bind-mounted read-only
	ConfigPath string // absolute path of the dso.yaml in use, or ""
	Agent      string // the agent that serves the containers (dso.agent label)
}

// Image is what the wiring needs of a service's image.
type Image struct {
	Entrypoint []string
	Cmd        []string
	User       string
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
		plan.Services = append(plan.Services, sp)
	}
	return plan, nil
}

// Override returns the compose file, to be read after the project's own
// files, that wires the planned services. It is JSON, which compose reads as
// YAML, and holds references only, never a value.
func (pl *Plan) Override() ([]byte, error) {
	type volume struct {
		Type     string `json:"type"`
		Source   string `json:"source"`
		Target   string `json:"target"`
		ReadOnly bool   `json:"read_only"`
	}
	type service struct {
		Entrypoint []string          `json:"entrypoint"`
		Command    []string          `json:"command,omitempty"`
		Volumes    []volume          `json:"volumes"`
		Tmpfs      []string          `json:"tmpfs"`
		Labels     map[string]string `json:"labels"`
	}
	services := map[string]service{}
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
		if pl.Wiring.ConfigPath != "" {
			labels[LabelConfig] = pl.Wiring.ConfigPath
		}
		s := service{
			Entrypoint: append([]string{initproc.InitPath, "--"}, sp.Entrypoint...),
			Command:    sp.Command,
			Volumes:    []volume{{Type: "bind", Source: pl.Wiring.InitBinary, Target: initproc.InitPath, ReadOnly: true}},
			Tmpfs:      []string{tmpfsSpec(sp.UID, sp.GID)},
			Labels:     labels,
		}
		escapeAll(s.Entrypoint)
		escapeAll(s.Command)
		for k, v := range s.Labels {
			s.Labels[k] = escape(v)
		}
		s.Volumes[0].Source = escape(s.Volumes[0].Source)
		services[sp.Name] = s
	}
	return json.MarshalIndent(map[string]any{"services": services}, "", "  ")
}

// escape protects a literal from compose's interpolation of the override.
func escape(s string) string { return strings.ReplaceAll(s, "$", "$$") }

func escapeAll(ss []string) {
	for i := range ss {
		ss[i] = escape(ss[i])
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
