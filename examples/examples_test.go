// Package examples checks the example projects under examples/ the way
// `docker dso config validate` and `docker dso up` read them: each dso.yaml
// passes validation, its providers can be built, each compose.yaml loads as
// Docker Compose loads it, and every secret a service asks for is well formed
// and names a provider the dso.yaml defines. Nothing is fetched.
package examples

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dso-project/dso/internal/cli/composecmd"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/awssm"
	"github.com/dso-project/dso/internal/provider/azurekv"
	"github.com/dso-project/dso/internal/provider/vault"
	"github.com/dso-project/dso/internal/resolve"
)

// perProvider are the examples the README promises, one per provider type.
var perProvider = []string{"local", "vault", "aws", "azure", "plugin"}

func TestExamplesAreValid(t *testing.T) {
	files, err := filepath.Glob("*/dso.yaml")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		dir := filepath.Dir(f)
		seen[dir] = true
		t.Run(dir, func(t *testing.T) { checkExample(t, dir) })
	}
	for _, want := range perProvider {
		if !seen[want] {
			t.Errorf("examples/%s/dso.yaml is missing", want)
		}
		if _, err := os.Stat(filepath.Join(want, "README.md")); err != nil {
			t.Errorf("examples/%s has no README.md: %v", want, err)
		}
	}
}

func checkExample(t *testing.T, dir string) {
	// ${VAR} in an example stands for what the user exports: any value does.
	loader := config.Loader{
		LookupEnv: func(name string) (string, bool) { return "example-" + name, true },
		Home:      t.TempDir(),
	}
	cfg, err := loader.Load(filepath.Join(dir, "dso.yaml"))
	if err != nil {
		t.Fatalf("config validate: %v", err)
	}
	set, err := registry(t).Build(cfg)
	if err != nil {
		t.Fatalf("building the providers: %v", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := compose.Load(t.Context(), compose.ProjectOptions{Files: []string{filepath.Join(abs, "compose.yaml")}, ProjectDir: abs})
	if err != nil {
		t.Fatalf("loading compose.yaml: %v", err)
	}
	uses, err := compose.FindUses(p, p.ServiceNames(), composecmd.LabelSecrets(cfg))
	if err != nil {
		t.Fatalf("the secrets of compose.yaml: %v", err)
	}
	if len(uses) == 0 && dir != "quickstart" {
		t.Errorf("compose.yaml asks for no secret")
	}
	for _, u := range uses {
		if _, _, err := set.Provider(u.Ref); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// registry builds vault, aws and azure providers with their real
// constructors, which check the auth methods and addresses without a call
// to the backend. The local vault and plugins stand in: they need files the
// user creates first (`docker dso init`, the plugin binary).
func registry(t *testing.T) *resolve.Registry {
	r := &resolve.Registry{}
	for typ, build := range map[config.ProviderType]resolve.Builder{
		config.ProviderVault:  func(n string, pc config.Provider) (provider.Provider, error) { return vault.FromConfig(n, pc) },
		config.ProviderAWS:    func(n string, pc config.Provider) (provider.Provider, error) { return awssm.FromConfig(n, pc) },
		config.ProviderAzure:  func(n string, pc config.Provider) (provider.Provider, error) { return azurekv.FromConfig(n, pc) },
		config.ProviderLocal:  func(string, config.Provider) (provider.Provider, error) { return notFetched{}, nil },
		config.ProviderPlugin: func(string, config.Provider) (provider.Provider, error) { return notFetched{}, nil },
	} {
		if err := r.Register(typ, build); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

type notFetched struct{}

var errNotFetched = errors.New("the examples' test fetches nothing")

func (notFetched) Get(context.Context, string) (provider.Secret, error) {
	return provider.Secret{}, errNotFetched
}

func (notFetched) Version(context.Context, string) (string, error) { return "", errNotFetched }
