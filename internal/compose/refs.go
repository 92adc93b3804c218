package compose

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
	Perm     secretref.Perm    // inject uid, gid and mode, for files
	Mappings map[string]string // variable -> path in the provider
}

// Secrets gives the label form its dso.yaml secrets.
type Secrets struct {
	// Lookup finds a secret by name.
	Lookup func(name string) (LabelSecret, bool)
	// Targeting names the secrets whose targets.containers lists the
	// service or its container name.
	Targeting func(service, containerName string) []string
}

// secretNames are the dso.yaml secrets a service asks for, with where each
// request comes from: its dso.secrets label, and the secrets that target it.
func secretNames(svc types.ServiceConfig, secrets Secrets) [][2]string {
	var names [][2]string
	seen := map[string]bool{}
	add := func(n, origin string) {
		if n = strings.TrimSpace(n); n != "" && !seen[n] {
			seen[n] = true
			names = append(names, [2]string{n, fmt.Sprintf(origin, n)})
		}
	}
	for _, n := range strings.Split(svc.Labels[LabelSecrets], ",") {
		add(n, "label "+LabelSecrets+" %q")
	}
	if secrets.Targeting != nil {
		for _, n := range secrets.Targeting(svc.Name, svc.ContainerName) {
			add(n, "dso.yaml secret %q, targets.containers")
		}
	}
	return names
}

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
		for _, named := range secretNames(svc, secrets) {
			sname, origin := named[0], named[1]
			ls, found := LabelSecret{}, false
			if secrets.Lookup != nil {
				ls, found = secrets.Lookup(sname)
			}
			if !found {
				errs = append(errs, fmt.Errorf("service %q, %s: secret %q is not defined in dso.yaml (add it under secrets: with its mappings)", name, origin, sname))
				continue
			}
			for v, path := range ls.Mappings {
				ref := secretref.Ref{File: ls.File, Provider: ls.Provider, Path: path, Perm: ls.Perm}
				if _, err := secretref.Parse(ref.String()); err != nil {
					errs = append(errs, fmt.Errorf("service %q, %s, variable %s: %w", name, origin, v, err))
					continue
				}
				uses = append(uses, Use{Service: name, Var: v, Ref: ref.InProject(p.Name), Origin: origin})
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

// Services are the services of uses, each once, in the order of uses.
func Services(uses []Use) []string {
	var out []string
	for i, u := range uses {
		if i == 0 || !slices.ContainsFunc(uses[:i], func(o Use) bool { return o.Service == u.Service }) {
			out = append(out, u.Service)
		}
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
