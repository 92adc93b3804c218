package vault_test

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/providertest"
	"github.com/dso-project/dso/internal/provider/retry"
	"github.com/dso-project/dso/internal/provider/vault"
	"github.com/dso-project/dso/internal/testbed"
)

// server is the Vault dev server started by TestMain; nil when the binary
// is not built (the tests then skip, except under CI where that fails).
var (
	server     *providertest.VaultServer
	skipReason string
	root       *api.Client
	readToken  string // token with the "reader" policy
)

const readerPolicy = `
path "secret/data/conf/*"     { capabilities = ["read"] }
path "secret/metadata/conf/*" { capabilities = ["read"] }
path "kv1/conf/*"             { capabilities = ["read"] }
`

func TestMain(m *testing.M) {
	bin, err := providertest.VaultBinary()
	if err != nil {
		if testbed.InCI() {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			os.Exit(1)
		}
		skipReason = err.Error()
		os.Exit(m.Run())
	}
	server, err = providertest.StartVault(bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	if err := setup(); err != nil {
		server.Stop()
		fmt.Fprintln(os.Stderr, "FAIL: vault setup:", err)
		os.Exit(1)
	}
	code := m.Run()
	server.Stop()
	os.Exit(code)
}

func setup() error {
	cfg := &api.Config{Address: server.Addr}
	c, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	c.SetToken(server.Token)
	root = c
	if err := c.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		return err
	}
	if err := c.Sys().PutPolicy("reader", readerPolicy); err != nil {
		return err
	}
	renewable := true
	s, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"reader"}, TTL: "1h", Renewable: &renewable})
	if err != nil {
		return err
	}
	readToken = s.Auth.ClientToken
	return c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"})
}

func need(t *testing.T) {
	t.Helper()
	if server == nil {
		t.Skip(skipReason)
	}
}

func newProvider(t *testing.T, opts vault.Options) *vault.Provider {
	t.Helper()
	if opts.Address == "" {
		opts.Address = server.Addr
	}
	if opts.Token == "" && opts.AppRole == nil {
		opts.Token = readToken
	}
	p, err := vault.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// put writes a data map at mount/conf/name (KV v1 or v2) with the root token.
func put(t *testing.T, mount string, v2 bool, rel string, data map[string]any) {
	t.Helper()
	var err error
	if v2 {
		_, err = root.Logical().Write(mount+"/data/"+rel, map[string]any{"data": data})
	} else {
		_, err = root.Logical().Write(mount+"/"+rel, data)
	}
	if err != nil {
		t.Fatalf("writing %s/%s: %v", mount, rel, err)
	}
}

func fixture(t *testing.T, mount string, v2 bool) providertest.Fixture {
	fast := retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond}
	return providertest.Fixture{
		Provider: newProvider(t, vault.Options{Retry: fast}),
		Put: func(t *testing.T, name string, value []byte) (string, string) {
			put(t, mount, v2, "conf/"+name, map[string]any{"value": string(value)})
			return mount + "/conf/" + name, "value"
		},
		PutJSON: func(t *testing.T, name string, obj map[string]any) string {
			put(t, mount, v2, "conf/"+name, obj)
			return mount + "/conf/" + name
		},
		Path: func(name string) string { return mount + "/conf/" + name },
		Denied: func(t *testing.T, value []byte) string {
			put(t, mount, v2, "denied/x", map[string]any{"value": string(value)})
			return mount + "/denied/x"
		},
		Unreachable: func(t *testing.T, timeout time.Duration) provider.Provider {
			return newProvider(t, vault.Options{Address: "http://" + providertest.DeadAddr(t),
				Retry: retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond, Timeout: timeout}})
		},
		Slow: func(t *testing.T, timeout time.Duration) provider.Provider {
			px := providertest.NewProxy(t, server.Addr, nil)
			px.SetDelay(5 * timeout)
			return newProvider(t, vault.Options{Address: px.URL,
				Retry: retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond, Timeout: timeout}})
		},
	}
}

func TestConformanceKV2(t *testing.T) {
	need(t)
	providertest.Run(t, fixture(t, "secret", true))
}

func TestConformanceKV1(t *testing.T) {
	need(t)
	providertest.Run(t, fixture(t, "kv1", false))
}

// The seed's mappings use KV v2's API form and a field as the last segment:
// secret/data/prod/database/password.
func TestSeedPathForms(t *testing.T) {
	need(t)
	put(t, "secret", true, "conf/database", map[string]any{"password": "pw", "user": "app"})
	p := newProvider(t, vault.Options{})
	ctx := context.Background()
	for path, want := range map[string]string{
		"secret/conf/database/password":      "pw",
		"secret/data/conf/database/password": "pw",
		"secret/data/conf/database":          `{"password":"pw","user":"app"}`,
	} {
		s, err := p.Get(ctx, path)
		if err != nil || string(s.Value) != want {
			t.Errorf("Get(%q) = %q, %v; want %q", path, s.Value, err, want)
		}
		if v, err := p.Version(ctx, path); err != nil || v != s.Version {
			t.Errorf("Version(%q) = %q, %v; want %q", path, v, err, s.Version)
		}
	}
	_, err := p.Get(ctx, "secret/conf/database/nope")
	if !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("a missing field as last segment: %v, want not found", err)
	}
	_, err = p.Get(ctx, "nomount/x")
	if !errors.Is(err, provider.ErrDenied) && !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("a path under no mount: %v, want denied or not found", err)
	}
}

// A version check reads KV v2 metadata only, never the data.
func TestVersionReadsOnlyMetadata(t *testing.T) {
	need(t)
	px := providertest.NewProxy(t, server.Addr, nil)
	p := newProvider(t, vault.Options{Address: px.URL})
	const n = 50
	for i := range n {
		put(t, "secret", true, fmt.Sprintf("conf/meta-%d", i), map[string]any{"v": "x"})
	}
	for i := range n {
		if _, err := p.Version(context.Background(), fmt.Sprintf("secret/conf/meta-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var data, meta, other int
	for k, c := range px.Counts() {
		switch {
		case strings.HasPrefix(k, "GET /v1/secret/data/"):
			data += c
		case strings.HasPrefix(k, "GET /v1/secret/metadata/"):
			meta += c
		default:
			other += c
		}
	}
	if data != 0 || meta != n || other != 1 {
		t.Errorf("%d version checks made %d data reads, %d metadata reads, %d other calls; want 0, %d, 1 (the mount lookup)", n, data, meta, other, n)
	}
}

// TestUnreadableAnswerIsRetried: a 200 whose body cannot be read (cut
// short) is retried, and its error quotes nothing of it.
func TestUnreadableAnswerIsRetried(t *testing.T) {
	need(t)
	put(t, "secret", true, "conf/cut", map[string]any{"value": "whole"})
	px := providertest.NewProxy(t, server.Addr, nil)
	var cuts atomic.Int32
	px.SetAnswer(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/v1/secret/data/") || cuts.Add(-1) < 0 {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":{"data":{"value":"`+providertest.Canary)
		return true
	})
	p := newProvider(t, vault.Options{Address: px.URL, Retry: retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond}})
	ctx := context.Background()
	cuts.Store(1)
	if s, err := p.Get(ctx, "secret/conf/cut"); err != nil || string(s.Value) != `{"value":"whole"}` {
		t.Errorf("after one answer cut short: %q, %v; want the value from the second attempt", s.Value, err)
	}
	cuts.Store(100)
	_, err := p.Get(ctx, "secret/conf/cut")
	if !errors.Is(err, provider.ErrUnreachable) || strings.Contains(err.Error(), providertest.Canary) || !strings.Contains(err.Error(), "could not be read") {
		t.Errorf("every answer cut short: %v; want unreachable, saying the answer could not be read, quoting none of it", err)
	}
}

func TestAppRole(t *testing.T) {
	need(t)
	roleID, secretID := approle(t, "app", "1h", "2h")
	dir := t.TempDir()
	file := filepath.Join(dir, "secret-id")
	if err := os.WriteFile(file, []byte(secretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	put(t, "secret", true, "conf/approle", map[string]any{"k": "v"})
	for _, ar := range []*vault.AppRole{{RoleID: roleID, SecretID: secretID}, {RoleID: roleID, SecretIDFile: file}} {
		p := newProvider(t, vault.Options{AppRole: ar})
		s, err := p.Get(context.Background(), "secret/conf/approle")
		if err != nil || string(s.Value) != `{"k":"v"}` {
			t.Errorf("approle get = %q, %v", s.Value, err)
		}
	}
	p := newProvider(t, vault.Options{AppRole: &vault.AppRole{RoleID: roleID, SecretID: "wrong"}})
	_, err := p.Get(context.Background(), "secret/conf/approle")
	if !errors.Is(err, provider.ErrDenied) || !strings.Contains(fmt.Sprint(err), "approle login") {
		t.Errorf("wrong secret id: %v, want a failed approle login", err)
	}
}

func approle(t *testing.T, name, ttl, maxTTL string) (roleID, secretID string) {
	t.Helper()
	if _, err := root.Logical().Write("auth/approle/role/"+name, map[string]any{
		"token_policies": "reader", "token_ttl": ttl, "token_max_ttl": maxTTL,
	}); err != nil {
		t.Fatal(err)
	}
	r, err := root.Logical().Read("auth/approle/role/" + name + "/role-id")
	if err != nil {
		t.Fatal(err)
	}
	s, err := root.Logical().Write("auth/approle/role/"+name+"/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Data["role_id"].(string), s.Data["secret_id"].(string)
}

// eventually polls cond until it holds; the deadline is generous (the
// server's TTLs are real time, and a loaded machine is slow), so that only
// a condition that never comes fails.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Run renews a short-lived token, which would otherwise expire: once a
// control token of the same TTL has expired, the renewed one still works.
func TestRenewal(t *testing.T) {
	need(t)
	t.Parallel()
	renewable := true
	mk := func() string {
		s, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"reader"}, TTL: "2s", Renewable: &renewable})
		if err != nil {
			t.Fatal(err)
		}
		return s.Auth.ClientToken
	}
	renewed, control := mk(), mk()
	put(t, "secret", true, "conf/renew", map[string]any{"k": "v"})
	p := newProvider(t, vault.Options{Token: renewed})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	c := newProvider(t, vault.Options{Token: control})
	eventually(t, "the control token (2s, not renewed) to expire", func() bool {
		_, err := c.Get(context.Background(), "secret/conf/renew")
		return errors.Is(err, provider.ErrDenied)
	})
	if _, err := p.Get(context.Background(), "secret/conf/renew"); err != nil {
		t.Errorf("with Run, a 2s token no longer works once one of its age has expired: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v after cancel, want nil", err)
	}
}

// With AppRole, Run logs in again when the token reaches its maximum TTL;
// without Run, the next call after expiry logs in again (every call
// succeeds).
func TestAppRoleReloginAtMaxTTL(t *testing.T) {
	need(t)
	t.Parallel()
	roleID, secretID := approle(t, "short", "1s", "3s")
	put(t, "secret", true, "conf/relogin", map[string]any{"k": "v"})
	logs := &tlog{t: t}
	p := newProvider(t, vault.Options{AppRole: &vault.AppRole{RoleID: roleID, SecretID: secretID},
		Retry: retry.Policy{Backoff: 100 * time.Millisecond}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if _, err := p.Get(context.Background(), "secret/conf/relogin"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a call after the token expired to log in again", func() bool {
		if _, err := p.Get(context.Background(), "secret/conf/relogin"); err != nil {
			t.Fatalf("a call after the token expired did not log in again: %v", err)
		}
		return logs.logins.Load() >= 2
	})
	if n := logs.logins.Load(); n != 2 {
		t.Fatalf("%d logins before Run, want 2", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	// No call meanwhile: only Run can log in.
	eventually(t, "Run to log in again twice (3s max TTL)", func() bool { return logs.logins.Load() >= 4 })
	cancel()
	<-done
	if _, err := p.Get(context.Background(), "secret/conf/relogin"); err != nil {
		t.Errorf("a call after Run kept the login fresh failed: %v", err)
	}
}

// The CA file is trusted; without it the certificate is refused (and not
// retried as if the server were down); skip-verify works only when set.
func TestTLS(t *testing.T) {
	need(t)
	u, _ := url.Parse(server.Addr)
	ts := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(u))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	ts.StartTLS()
	defer ts.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	put(t, "secret", true, "conf/tls", map[string]any{"k": "v"})
	ctx := context.Background()
	if _, err := newProvider(t, vault.Options{Address: ts.URL, CAFile: ca}).Get(ctx, "secret/conf/tls"); err != nil {
		t.Errorf("with the CA file: %v", err)
	}
	_, err := newProvider(t, vault.Options{Address: ts.URL}).Get(ctx, "secret/conf/tls")
	if err == nil || !strings.Contains(err.Error(), "certificate") || errors.Is(err, provider.ErrUnreachable) {
		t.Errorf("without the CA file: %v, want an unclassified certificate error", err)
	}
	if _, err := newProvider(t, vault.Options{Address: ts.URL, TLSSkipVerify: true}).Get(ctx, "secret/conf/tls"); err != nil {
		t.Errorf("with skip-verify: %v", err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("VAULT_TOKEN", "")
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("not pem"), 0o600)
	for name, tc := range map[string]struct {
		opts vault.Options
		want string
	}{
		"no address":      {vault.Options{Token: "t"}, "no address"},
		"no token":        {vault.Options{Address: "http://127.0.0.1:1"}, "no token"},
		"missing CA file": {vault.Options{Address: "http://x", Token: "t", CAFile: "/nonexistent/ca.pem"}, "CA file"},
		"bad CA file":     {vault.Options{Address: "http://x", Token: "t", CAFile: bad}, "no PEM certificate"},
		"approle no role": {vault.Options{Address: "http://x", AppRole: &vault.AppRole{SecretID: "s"}}, "role_id"},
		"bad retry":       {vault.Options{Address: "http://x", Token: "t", Retry: retry.Policy{Attempts: -1}}, "attempts"},
	} {
		_, err := vault.New(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `provider "vault"`) {
			t.Errorf("%s: err = %v, want one naming the provider and %q", name, err, tc.want)
		}
	}
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", "from-env")
	if _, err := vault.New(vault.Options{}); err != nil {
		t.Errorf("VAULT_ADDR and VAULT_TOKEN from the environment: %v", err)
	}
}

// tlog writes log lines to the test log and counts approle logins.
type tlog struct {
	t      *testing.T
	logins atomic.Int32
}

func (w *tlog) Write(b []byte) (int, error) {
	if strings.Contains(string(b), "logged in with approle") {
		w.logins.Add(1)
	}
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// The namespace goes to Vault in the X-Vault-Namespace header (namespaces
// are a Vault Enterprise / HCP feature: the dev server has none, so this
// checks the header at a proxy).
func TestNamespaceHeader(t *testing.T) {
	need(t)
	px := providertest.NewProxy(t, server.Addr, nil)
	seen := make(chan string, 10)
	px.SetAnswer(func(w http.ResponseWriter, r *http.Request) bool {
		seen <- r.Header.Get("X-Vault-Namespace")
		return false
	})
	put(t, "secret", true, "conf/ns", map[string]any{"k": "v"})
	p := newProvider(t, vault.Options{Address: px.URL, Namespace: "team-a"})
	_, _ = p.Get(context.Background(), "secret/conf/ns")
	if ns := <-seen; ns != "team-a" {
		t.Errorf("X-Vault-Namespace = %q, want team-a", ns)
	}
}
