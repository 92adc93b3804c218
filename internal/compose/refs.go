package compose

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/dso-project/dso/internal/secretref"
)

// Labels DSO reads or writes on services and containers.
const (
	LabelSecrets  = "dso.secrets"         // seed form: names of dso.yaml secrets, comma separated
	LabelStrategy = "dso.update.strategy" // none | signal | restart | rolling
	LabelManaged  = "dso.managed"         // "true" on wired services
	LabelRefs     = "dso.refs"            // JSON object: variable -> canonical reference
	LabelConfig   = "dso.config"          // absolute path of the dso.yaml used, if any
	LabelAgent    = "dso.agent"           // the agent that serves the container: "system" or a local agent's id
)

// Use is one variable of one service that takes a secret.
type Use struct {
	Service string
	Var     string
	Ref     secretref.Ref // with the project part filled in
	// Origin says where the reference came from, for messages:
	// "environment" or `label dso.secrets "NAME"`.
	Origin string
}

func (u Use) String() string {
	return fmt.Sprintf("service %q, variable %s (%s): %s", u.Service, u.Var, u.Origin, u.Ref)
}

// LabelSecret is what a dso.yaml secret gives the seed's label form.
type LabelSecret struct {
	Provider string
	File     bool              // inject.type file
	Mappings map[string]string // variable -> path in the provider
}

// Secrets looks up a dso.yaml secret by name for the label form.
type Secrets func(name string) (LabelSecret, bool)

// FindUses returns every secret reference of the given services, sorted by
// service and variable. All problems are reported at once, each naming the
// service, the variable and the reference.
func FindUses(p *types.Project, services []string, secrets Secrets) ([]Use, error) {
	var uses []Use
	var errs []error
	for _, name := range services {
		svc, err := p.GetService(name)
		if err != nil {
			return nil, err
		}
		for v, val := range svc.Environment {
			if val == nil || !secretref.IsRef(*val) {
				continue
			}
			ref, err := secretref.Parse(*val)
			if err != nil {
				errs = append(errs, fmt.Errorf("service %q, variable %s: %w", name, v, err))
				continue
			}
			uses = append(uses, Use{Service: name, Var: v, Ref: ref.InProject(p.Name), Origin: "environment"})
		}
		if list, ok := svc.Labels[LabelSecrets]; ok {
			for _, sname := range strings.Split(list, ",") {
				sname = strings.TrimSpace(sname)
				if sname == "" {
					continue
				}
				ls, found := LabelSecret{}, false
				if secrets != nil {
					ls, found = secrets(sname)
				}
				if !found {
					errs = append(errs, fmt.Errorf("service %q, label %s: secret %q is not defined in dso.yaml (add it under secrets: with its mappings)", name, LabelSecrets, sname))
					continue
				}
				for v, path := range ls.Mappings {
					ref := secretref.Ref{File: ls.File, Provider: ls.Provider, Path: path}
					if _, err := secretref.Parse(ref.String()); err != nil {
						errs = append(errs, fmt.Errorf("service %q, label %s, secret %q, variable %s: %w", name, LabelSecrets, sname, v, err))
						continue
					}
					uses = append(uses, Use{Service: name, Var: v, Ref: ref.InProject(p.Name), Origin: fmt.Sprintf("label %s %q", LabelSecrets, sname)})
				}
			}
		}
	}
	sort.Slice(uses, func(i, j int) bool {
		if uses[i].Service != uses[j].Service {
			return uses[i].Service < uses[j].Service
		}
		return uses[i].Var < uses[j].Var
	})
	for i := 1; i < len(uses); i++ {
		if uses[i].Service == uses[i-1].Service && uses[i].Var == uses[i-1].Var && uses[i].Ref != uses[i-1].Ref {
			errs = append(errs, fmt.Errorf("service %q, variable %s: two references (%s, %s)", uses[i].Service, uses[i].Var, uses[i-1].Origin, uses[i].Origin))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return dedupe(uses), nil
}

func dedupe(uses []Use) []Use {
	out := uses[:0]
	for i, u := range uses {
		if i > 0 && u.Service == uses[i-1].Service && u.Var == uses[i-1].Var {
			continue
		}
		out = append(out, u)
	}
	return out
}

// RefsFromLabels reads the references a wired container carries in its
// dso.refs label: variable -> reference.
func RefsFromLabels(labels map[string]string) (map[string]secretref.Ref, error) {
	raw, ok := labels[LabelRefs]
	if !ok {
		return nil, fmt.Errorf("no %s label", LabelRefs)
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, fmt.Errorf("label %s is not a JSON object of variable -> reference", LabelRefs)
	}
	out := make(map[string]secretref.Ref, len(m))
	for v, s := range m {
		r, err := secretref.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("label %s, variable %s: %w", LabelRefs, v, err)
		}
		out[v] = r
	}
	return out, nil
}
