// Package resolve turns secret references into values. It builds the
// providers that dso.yaml names through a registry keyed by provider type,
// picks the provider of each reference, fetches each secret once however many
// references name it, and extracts JSON fields ("#key").
package resolve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/secretref"
)

// Builder makes the provider called name from its dso.yaml entry; its
// errors name the provider.
type Builder func(name string, p config.Provider) (provider.Provider, error)

// Registry maps provider types to builders.
type Registry struct {
	builders map[config.ProviderType]Builder
}

// Register adds the builder of a provider type; a type registers once.
func (r *Registry) Register(t config.ProviderType, b Builder) error {
	if r.builders == nil {
		r.builders = map[config.ProviderType]Builder{}
	}
	if _, dup := r.builders[t]; dup {
		return fmt.Errorf("provider type %q registered twice", t)
	}
	r.builders[t] = b
	return nil
}

// DefaultLocal is the provider used when no dso.yaml exists: the local vault
// at its default paths, under the name "local".
const DefaultLocal = "local"

// Set holds the providers of one configuration by name.
type Set struct {
	byName map[string]provider.Provider
	types  map[string]config.ProviderType
	def    string
}

// Build makes every provider of cfg. A nil cfg gives the local vault alone.
func (r *Registry) Build(cfg *config.Config) (*Set, error) {
	providers := map[string]config.Provider{DefaultLocal: {Type: config.ProviderLocal}}
	def := DefaultLocal
	if cfg != nil && len(cfg.Providers) > 0 {
		providers = cfg.Providers
		def = cfg.DefaultProvider()
	}
	s := &Set{byName: map[string]provider.Provider{}, types: map[string]config.ProviderType{}, def: def}
	names := make([]string, 0, len(providers))
	for n := range providers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pc := providers[n]
		b, ok := r.builders[pc.Type]
		if !ok {
			s.Close()
			return nil, fmt.Errorf("provider %q: type %q is not available in this build", n, pc.Type)
		}
		p, err := b(n, pc)
		if err != nil {
			s.Close()
			return nil, err // builders name the provider
		}
		s.byName[n] = p
		s.types[n] = pc.Type
	}
	return s, nil
}

// Type returns the type of the provider called name.
func (s *Set) Type(name string) config.ProviderType { return s.types[name] }

// Close releases providers that hold resources (token renewal, plugin
// processes).
func (s *Set) Close() error {
	var errs []error
	for _, p := range s.byName {
		if c, ok := p.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Named returns the provider called name.
func (s *Set) Named(name string) (provider.Provider, bool) {
	p, ok := s.byName[name]
	return p, ok
}

// Names lists the providers of the set, sorted.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.byName))
	for n := range s.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Provider returns the provider a reference uses and its name.
func (s *Set) Provider(ref secretref.Ref) (provider.Provider, string, error) {
	name := ref.Provider
	if name == "" {
		name = s.def
		if name == "" {
			return nil, "", fmt.Errorf("%s names no provider and dso.yaml has several with no defaults.provider: add ?provider=NAME (one of %v)", ref, s.Names())
		}
	}
	p, ok := s.byName[name]
	if !ok {
		return nil, "", fmt.Errorf("%s: provider %q is not defined in dso.yaml (known: %v)", ref, name, s.Names())
	}
	return p, name, nil
}

// Resolved is the value of one reference and the version of its secret.
type Resolved struct {
	Value    []byte
	Version  string
	Provider string // name of the provider
}

// Errors are the failures of Fetch, by reference.
type Errors map[secretref.Ref]error

func (e Errors) sorted() []error {
	refs := make([]secretref.Ref, 0, len(e))
	for r := range e {
		refs = append(refs, r)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].String() < refs[j].String() })
	out := make([]error, len(refs))
	for i, r := range refs {
		out[i] = e[r]
	}
	return out
}

func (e Errors) Error() string   { return errors.Join(e.sorted()...).Error() }
func (e Errors) Unwrap() []error { return e.sorted() }

// Fetch resolves refs, fetching each (provider, path) once, in batches where
// the provider offers them (provider.GetMany). Every failure is reported (as
// Errors), each naming its reference, beside the references that resolved;
// no value is ever in an error.
func (s *Set) Fetch(ctx context.Context, refs []secretref.Ref) (map[secretref.Ref]Resolved, error) {
	errs := Errors{}
	paths := map[string][]string{} // provider name -> paths
	for _, ref := range refs {
		_, name, err := s.Provider(ref)
		if err != nil {
			errs[ref] = err
			continue
		}
		paths[name] = append(paths[name], ref.Path)
	}
	fetched := map[string]map[string]provider.Result{}
	for name, ps := range paths {
		fetched[name] = provider.GetMany(ctx, s.byName[name], ps)
	}
	out := map[secretref.Ref]Resolved{}
	for _, ref := range refs {
		if _, failed := errs[ref]; failed {
			continue
		}
		_, name, _ := s.Provider(ref)
		r := fetched[name][ref.Path]
		if r.Err != nil {
			errs[ref] = fmt.Errorf("%s: %w", ref, r.Err)
			continue
		}
		v := r.Secret.Value
		if ref.Key != "" {
			var err error
			if v, err = provider.Field(r.Secret.Value, ref.Key); err != nil {
				errs[ref] = fmt.Errorf("%s: %w", ref, err)
				continue
			}
		}
		out[ref] = Resolved{Value: v, Version: r.Secret.Version, Provider: name}
	}
	if len(errs) > 0 {
		return out, errs
	}
	return out, nil
}
