// Package provider defines the interface every secret backend implements
// (the local vault, HashiCorp Vault, AWS Secrets Manager, Azure Key Vault,
// external plugins), the errors they classify failures into, and the
// registry that builds them from dso.yaml by type.
package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// Provider fetches secrets from one backend.
type Provider interface {
	// Get returns the whole value stored at path and its version.
	Get(ctx context.Context, path string) (Secret, error)
	// Version returns the current version of the secret at path without
	// fetching its value, so that change detection costs little.
	Version(ctx context.Context, path string) (string, error)
}

// Secret is a value with the version the backend gave it.
type Secret struct {
	Value   []byte
	Version string
}

// Classified failures. Providers wrap them with the provider name and the
// path, never the value: fmt.Errorf("provider %q: secret %q: %w", name, path, ErrNotFound).
var (
	ErrNotFound    = errors.New("secret not found")
	ErrDenied      = errors.New("access denied")
	ErrUnreachable = errors.New("backend unreachable")
	ErrThrottled   = errors.New("throttled by backend")
)

// Error is a failure of one provider call. It names the provider and the
// secret, never the value.
type Error struct {
	Provider string // provider name from dso.yaml
	Path     string // the secret's path in that provider
	Kind     error  // ErrNotFound, ErrDenied, ErrUnreachable, ErrThrottled, or nil
	Err      error  // what the backend said; must not hold a secret value
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("provider %q: secret %q", e.Provider, e.Path)
	if e.Kind != nil {
		msg += ": " + e.Kind.Error()
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }

// Batcher is implemented by providers that can fetch several secrets in
// fewer calls than one per secret. Results are in the order of paths.
type Batcher interface {
	GetMany(ctx context.Context, paths []string) []Result
}

// Result is the outcome of fetching one secret of a batch.
type Result struct {
	Secret Secret
	Err    error
}

// GetMany fetches each distinct path once: in batches when p is a Batcher,
// else with up to 8 calls in flight.
func GetMany(ctx context.Context, p Provider, paths []string) map[string]Result {
	out := make(map[string]Result, len(paths))
	var unique []string
	for _, path := range paths {
		if _, seen := out[path]; !seen {
			out[path] = Result{}
			unique = append(unique, path)
		}
	}
	if b, ok := p.(Batcher); ok {
		for i, r := range b.GetMany(ctx, unique) {
			out[unique[i]] = r
		}
		return out
	}
	results := make([]Result, len(unique))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, path := range unique {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := p.Get(ctx, path)
			results[i] = Result{Secret: s, Err: err}
		}()
	}
	wg.Wait()
	for i, r := range results {
		out[unique[i]] = r
	}
	return out
}

// Field returns the field key of a JSON object secret. A string field comes
// back as its text; any other JSON value comes back as JSON text.
func Field(value []byte, key string) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(value, &obj); err != nil {
		return nil, fmt.Errorf("field %q: the secret is not a JSON object", key)
	}
	raw, ok := obj[key]
	if !ok {
		return nil, fmt.Errorf("field %q: %w in the JSON object", key, ErrNotFound)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return []byte(s), nil
	}
	return []byte(raw), nil
}
