package resolve

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/secretref"
)

// memory is an in-memory provider that counts its calls.
type memory struct {
	mu      sync.Mutex
	values  map[string]string
	gets    int
	batches int
	batch   bool
}

func (m *memory) Get(_ context.Context, path string) (provider.Secret, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gets++
	v, ok := m.values[path]
	if !ok {
		return provider.Secret{}, &provider.Error{Provider: "mem", Path: path, Kind: provider.ErrNotFound}
	}
	return provider.Secret{Value: []byte(v), Version: "1"}, nil
}

func (m *memory) Version(context.Context, string) (string, error) { return "1", nil }

// batching is a memory provider that fetches many in one call.
type batching struct{ *memory }

func (b batching) GetMany(ctx context.Context, paths []string) []provider.Result {
	b.mu.Lock()
	b.batches++
	b.mu.Unlock()
	out := make([]provider.Result, len(paths))
	for i, p := range paths {
		s, err := b.memory.Get(ctx, p)
		out[i] = provider.Result{Secret: s, Err: err}
	}
	return out
}

func TestFetchDedupesBatchesAndNamesEveryFailure(t *testing.T) {
	plain := &memory{values: map[string]string{"a/json": `{"user":"u","port":5432}`, "a/b": "vb"}}
	batched := &memory{values: map[string]string{"x/1": "v1", "x/2": "v2"}}
	r := &Registry{}
	r.Register(config.ProviderLocal, func(string, config.Provider) (provider.Provider, error) { return plain, nil })
	r.Register(config.ProviderAWS, func(string, config.Provider) (provider.Provider, error) { return batching{batched}, nil })
	set, err := r.Build(&config.Config{Providers: map[string]config.Provider{"loc": {Type: config.ProviderLocal}, "aws": {Type: config.ProviderAWS}}, Defaults: config.Defaults{Provider: "loc"}})
	if err != nil {
		t.Fatal(err)
	}
	refs := []secretref.Ref{
		secretref.MustParse("dso://a/json#user"), secretref.MustParse("dso://a/json#port"), secretref.MustParse("dsofile://a/json#user"),
		secretref.MustParse("dso://a/b"), secretref.MustParse("dso://x/1?provider=aws"), secretref.MustParse("dso://x/2?provider=aws"),
	}
	got, err := set.Fetch(context.Background(), refs)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[refs[0]].Value) != "u" || string(got[refs[1]].Value) != "5432" || string(got[refs[4]].Value) != "v1" {
		t.Errorf("values: %q %q %q", got[refs[0]].Value, got[refs[1]].Value, got[refs[4]].Value)
	}
	if plain.gets != 2 {
		t.Errorf("%d gets for 2 distinct secrets of a plain provider, want 2", plain.gets)
	}
	if batched.batches != 1 {
		t.Errorf("%d batch calls for a batching provider, want 1", batched.batches)
	}

	bad := []secretref.Ref{secretref.MustParse("dso://a/missing"), secretref.MustParse("dso://a/json#nokey"), secretref.MustParse("dso://a/b?provider=nope")}
	_, err = set.Fetch(context.Background(), bad)
	var fe Errors
	if !errors.As(err, &fe) || len(fe) != 3 {
		t.Fatalf("want 3 failures by reference, got %v", err)
	}
	if !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("not found is not classified: %v", err)
	}
	for _, r := range bad {
		if !strings.Contains(fe[r].Error(), r.String()) {
			t.Errorf("error %q does not name its reference", fe[r])
		}
	}
}
