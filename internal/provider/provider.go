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
