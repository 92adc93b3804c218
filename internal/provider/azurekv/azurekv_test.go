package azurekv_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/azurekv"
	"github.com/dso-project/dso/internal/provider/azurekv/azurekvtest"
	"github.com/dso-project/dso/internal/provider/providertest"
	"github.com/dso-project/dso/internal/provider/retry"
)

func start(t testing.TB) *azurekvtest.Server {
	t.Helper()
	srv, err := azurekvtest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func newProvider(t testing.TB, srv *azurekvtest.Server, addr string, pol retry.Policy) *azurekv.Provider {
	t.Helper()
	p, err := azurekv.New(azurekv.Options{VaultURL: srv.URL, Credential: srv.Credential(), HTTPClient: srv.HTTPClient(addr), Retry: pol})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	srv := start(t)
	fast := retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond}
	providertest.Run(t, providertest.Fixture{
		Provider: newProvider(t, srv, srv.Addr(), fast),
		Put: func(t *testing.T, name string, value []byte) (string, string) {
			srv.Set(name, string(value))
			return name, ""
		},
		PutJSON: func(t *testing.T, name string, obj map[string]any) string {
			srv.Set(name, mustJSON(t, obj))
			return name
		},
		Path: func(name string) string { return name },
		Denied: func(t *testing.T, value []byte) string {
			srv.Set("denied", string(value))
			srv.Deny("denied")
			return "denied"
		},
		Unreachable: func(t *testing.T, timeout time.Duration) provider.Provider {
			return newProvider(t, srv, providertest.DeadAddr(t), retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond, Timeout: timeout})
		},
		Slow: func(t *testing.T, timeout time.Duration) provider.Provider {
			srv.SetDelay(5 * timeout)
			t.Cleanup(func() { srv.SetDelay(0) })
			return newProvider(t, srv, srv.Addr(), retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond, Timeout: timeout})
		},
		MaxValue: 25 * 1024,
	})
}

func TestNameMapping(t *testing.T) {
	for path, want := range map[string]string{
		"db_password":          "db-password",
		"myapp/db_password":    "myapp-db-password",
		"Api-Key2":             "Api-Key2",
		"app/key::0123abcdef9": "app-key@0123abcdef9",
	} {
		name, version, err := azurekv.SecretName(path)
		got := name
		if version != "" {
			got += "@" + version
		}
		if err != nil || got != want {
			t.Errorf("SecretName(%q) = %q, %v; want %q", path, got, err, want)
		}
	}
	for _, path := range []string{"a.b", "user@host", "a:b", "é", "", strings.Repeat("a", 128), "a::v-1"} {
		if _, _, err := azurekv.SecretName(path); err == nil {
			t.Errorf("SecretName(%q) accepted a name Key Vault refuses", path)
		}
	}
}

// A mapped name reaches the secret; an explicit version reads that version.
func TestMappedNameAndVersion(t *testing.T) {
	srv := start(t)
	p := newProvider(t, srv, srv.Addr(), retry.Policy{})
	old := srv.Set("myapp-db-password", "one")
	srv.Set("myapp-db-password", "two")
	ctx := context.Background()
	s, err := p.Get(ctx, "myapp/db_password")
	if err != nil || string(s.Value) != "two" {
		t.Fatalf("Get latest = %q, %v", s.Value, err)
	}
	s, err = p.Get(ctx, "myapp/db_password::"+old)
	if err != nil || string(s.Value) != "one" || s.Version != old {
		t.Fatalf("Get old version = %q %q, %v", s.Value, s.Version, err)
	}
	if v, err := p.Version(ctx, "myapp/db_password::"+old); err != nil || v != old {
		t.Fatalf("Version of a given version = %q, %v", v, err)
	}
	_, err = p.Get(ctx, "bad.name")
	if err == nil || !strings.Contains(err.Error(), `'.'`) || errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("bad name: %v", err)
	}
}

// Version checks list properties only: no value is fetched for unchanged
// secrets created in different seconds.
func TestVersionReadsNoValue(t *testing.T) {
	srv := start(t)
	p := newProvider(t, srv, srv.Addr(), retry.Policy{})
	const n = 100
	for i := range n {
		srv.Set(fmt.Sprintf("s%d", i), "v")
	}
	srv.Reset()
	for i := range n {
		if _, err := p.Version(context.Background(), fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if c := srv.Counts(); c["get"] != 0 || c["versions"] != n {
		t.Fatalf("%d version checks made %v calls; want %d versions lists and no get", n, c, n)
	}
}

// TestUnreadableAnswerIsRetried: a 200 whose body cannot be read (cut
// short) is retried, and its error quotes nothing of it.
func TestUnreadableAnswerIsRetried(t *testing.T) {
	srv := start(t)
	p := newProvider(t, srv, srv.Addr(), retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond})
	srv.Set("cut", providertest.Canary)
	ctx := context.Background()
	srv.CutAnswers(1)
	if s, err := p.Get(ctx, "cut"); err != nil || string(s.Value) != providertest.Canary {
		t.Errorf("get after one answer cut short: %v; want the value from the second attempt", err)
	}
	srv.CutAnswers(1)
	if v, err := p.Version(ctx, "cut"); err != nil || v == "" {
		t.Errorf("version after one answer cut short: %q, %v; want the version from the second attempt", v, err)
	}
	srv.CutAnswers(100)
	_, err := p.Get(ctx, "cut")
	if !errors.Is(err, provider.ErrUnreachable) || strings.Contains(err.Error(), providertest.Canary) || !strings.Contains(err.Error(), "could not be read") {
		t.Errorf("every answer cut short: %v; want unreachable, saying the answer could not be read, quoting none of it", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
