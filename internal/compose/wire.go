package compose

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/dso-project/dso/internal/initproc"
)

// tmpfsSpec is the tmpfs that holds the init's socket and the secret files.
// It is world-writable with the sticky bit (like /tmp) so that the init,
// whatever user the service runs as, can create its own 0700 directory.
const tmpfsSpec = initproc.RunDir + ":mode=1777,size=64m"

// Wiring is what the override needs besides the project.
type Wiring struct {
	InitBinary string // host path of dso-init, bind-mounted read-only
	ConfigPath string // absolute path of the dso.yaml in use, or ""
}

// ImageConfig returns the entrypoint and command of the image a service
// runs (from the engine, after any build or pull).
type ImageConfig func(ctx context.Context, svc types.ServiceConfig) (entrypoint, cmd []string, err error)

// ServicePlan is how one service is wired.
type ServicePlan struct {
	Name       string
	Entrypoint []string // the service's own, run by the init
	Command    []string
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
func NewPlan(ctx context.Context, p *types.Project, uses []Use, w Wiring, img ImageConfig) (*Plan, error) {
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
		ep, cmd := []string(svc.Entrypoint), []string(svc.Command)
		if svc.Entrypoint == nil {
			iep, icmd, err := img(ctx, svc)
			if err != nil {
				return nil, fmt.Errorf("service %q: %w", n, err)
			}
			ep = iep
			if svc.Command == nil {
				cmd = icmd
			}
		}
		if len(ep)+len(cmd) == 0 {
			return nil, fmt.Errorf("service %q has no entrypoint or command, in the compose file or its image", n)
		}
		plan.Services = append(plan.Services, ServicePlan{Name: n, Entrypoint: ep, Command: cmd, Uses: by[n]})
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
		labels := map[string]string{LabelManaged: "true", LabelRefs: string(refsJSON)}
		if pl.Wiring.ConfigPath != "" {
			labels[LabelConfig] = pl.Wiring.ConfigPath
		}
		s := service{
			Entrypoint: append([]string{initproc.InitPath, "--"}, sp.Entrypoint...),
			Command:    sp.Command,
			Volumes:    []volume{{Type: "bind", Source: pl.Wiring.InitBinary, Target: initproc.InitPath, ReadOnly: true}},
			Tmpfs:      []string{tmpfsSpec},
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
