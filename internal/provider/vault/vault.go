// Package vault reads secrets from HashiCorp Vault (or OpenBao) KV engines.
//
// A path names a secret by its mount and its path inside the mount, as the
// vault CLI does: "secret/prod/db". The KV version (1 or 2) is found from
// the mount (sys/internal/ui/mounts) once per mount. For KV v2 the API form
// "secret/data/prod/db" is accepted too. A secret's value is its data map as
// JSON text, so "#key" picks a field; a path whose secret does not exist is
// read as a field of its parent ("secret/prod/db/password" is the field
// "password" of "secret/prod/db"), which keeps the seed's mappings working.
//
// Versions: KV v2 answers from the secret's metadata (current_version)
// without reading the value. KV v1 has no versions, so a KV v1 version
// check reads the value and reports a SHA-256 of it.
//
// Auth is a token (Options.Token, else VAULT_TOKEN) or AppRole. Run renews
// a renewable token, and logs in again with AppRole when the token reaches
// its maximum TTL.
package vault

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/hashicorp/vault/api"

	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/retry"
)

// Options configure a Vault provider.
type Options struct {
	Name          string // provider name in errors; "vault" if empty
	Address       string // https://vault.example.com:8200; VAULT_ADDR if empty
	Namespace     string // Vault Enterprise / HCP namespace; VAULT_NAMESPACE if empty
	CAFile        string // PEM file of CAs trusted for the server's certificate
	TLSSkipVerify bool   // skip certificate verification; only when configured
	Token         string // VAULT_TOKEN if empty and AppRole is nil
	AppRole       *AppRole
	Retry         retry.Policy
	Logger        *slog.Logger // renewal events; discarded if nil
}

// AppRole logs in with a role id and a secret id.
type AppRole struct {
	Mount        string // auth mount path; "approle" if empty
	RoleID       string
	SecretID     string
	SecretIDFile string // read the secret id from this file instead
}

// Provider reads KV secrets from one Vault server.
type Provider struct {
	name    string
	client  *api.Client
	approle *AppRole
	retry   retry.Policy
	log     *slog.Logger

	loginMu  sync.Mutex
	loggedIn bool

	lookupMu sync.Mutex // held while looking up a mount
	mu       sync.Mutex
	mounts   []mount // known mounts, found on demand
}

type mount struct {
	path    string // "secret/", with the trailing slash
	version int    // 1 or 2
}

// New checks opts and returns a provider. It makes no network call.
func New(opts Options) (*Provider, error) {
	name := opts.Name
	if name == "" {
		name = "vault"
	}
	bad := func(format string, a ...any) (*Provider, error) {
		return nil, fmt.Errorf("provider %q: %s", name, fmt.Sprintf(format, a...))
	}
	if err := opts.Retry.Validate(); err != nil {
		return bad("%v", err)
	}
	addr := opts.Address
	if addr == "" {
		addr = os.Getenv("VAULT_ADDR")
	}
	if addr == "" {
		return bad("no address: set params.address in dso.yaml or VAULT_ADDR")
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: opts.TLSSkipVerify}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return bad("CA file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return bad("CA file %s: no PEM certificate in it", opts.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConf
	cfg := &api.Config{
		Address:    addr,
		HttpClient: &http.Client{Transport: transport},
		MaxRetries: 0, // retries are ours, with the configured policy
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return bad("address %q: %v", addr, err)
	}
	client.SetMaxRetries(0)
	client.SetClientTimeout(0)
	if opts.Namespace != "" {
		client.SetNamespace(opts.Namespace)
	}
	p := &Provider{name: name, client: client, retry: opts.Retry.WithDefaults(), log: opts.Logger}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case opts.AppRole != nil:
		ar := *opts.AppRole
		if ar.Mount == "" {
			ar.Mount = "approle"
		}
		if ar.RoleID == "" {
			return bad("approle: role_id is empty")
		}
		if ar.SecretID == "" && ar.SecretIDFile == "" {
			return bad("approle: set secret_id or secret_id_file")
		}
		p.approle = &ar
		client.ClearToken()
	case opts.Token != "":
		client.SetToken(opts.Token)
	case client.Token() == "":
		return bad("no token: set auth token in dso.yaml, VAULT_TOKEN, or use approle")
	}
	return p, nil
}

// Get returns the secret's data map as JSON text and its version.
func (p *Provider) Get(ctx context.Context, path string) (provider.Secret, error) {
	var out provider.Secret
	err := p.do(ctx, path, func(ctx context.Context) error {
		m, rel, err := p.locate(ctx, path)
		if err != nil {
			return err
		}
		data, version, err := p.read(ctx, m, rel)
		if errors.Is(err, provider.ErrNotFound) {
			data, version, err = p.readParentField(ctx, m, rel, err)
		}
		if err != nil {
			return err
		}
		out = provider.Secret{Value: data, Version: version}
		return nil
	})
	return out, err
}

// Version returns the current version: KV v2 metadata's current_version,
// or for KV v1 a SHA-256 of the value (which reads it).
func (p *Provider) Version(ctx context.Context, path string) (string, error) {
	var out string
	err := p.do(ctx, path, func(ctx context.Context) error {
		m, rel, err := p.locate(ctx, path)
		if err != nil {
			return err
		}
		if m.version == 1 {
			_, v, err := p.read(ctx, m, rel)
			if errors.Is(err, provider.ErrNotFound) {
				_, v, err = p.readParentField(ctx, m, rel, err)
			}
			out = v
			return err
		}
		v, err := p.metadataVersion(ctx, m, rel)
		if errors.Is(err, provider.ErrNotFound) {
			if parent, _, ok := splitParent(rel); ok {
				if pv, perr := p.metadataVersion(ctx, m, parent); perr == nil {
					v, err = pv, nil
				}
			}
		}
		out = v
		return err
	})
	return out, err
}

// do runs one provider call under the retry policy and wraps its failure
// with the provider name and path.
func (p *Provider) do(ctx context.Context, path string, fn func(ctx context.Context) error) error {
	err := p.retry.Do(ctx, func(ctx context.Context) error {
		if err := p.ensureLogin(ctx); err != nil {
			return err
		}
		err := fn(ctx)
		if p.approle != nil && invalidToken(err) {
			// The token expired before Run renewed or replaced it (a
			// suspended host, say): log in again once.
			if lerr := p.forceLogin(ctx); lerr != nil {
				return lerr
			}
			err = fn(ctx)
		}
		return err
	})
	if err == nil {
		return nil
	}
	var pe *provider.Error
	if errors.As(err, &pe) {
		return err
	}
	return p.classify(path, err)
}

// classify turns a Vault client error into a provider.Error.
func (p *Provider) classify(path string, err error) error {
	e := &provider.Error{Provider: p.name, Path: path, Err: retry.TimeoutDetail(err, p.retry.Timeout)}
	var re *api.ResponseError
	switch {
	case errors.As(err, &re):
		e.Kind = retry.HTTPStatus(re.StatusCode)
		e.Err = responseDetail(re)
	case retry.Unreadable(err):
		e.Kind, e.Err = provider.ErrUnreachable, retry.ErrUnreadable
	default:
		e.Kind = retry.Transport(err)
	}
	return e
}

// invalidToken reports Vault's answer to an expired or revoked token.
func invalidToken(err error) bool {
	var pe *provider.Error
	return errors.As(err, &pe) && errors.Is(err, provider.ErrDenied) && strings.Contains(pe.Err.Error(), "invalid token")
}

// responseDetail is Vault's answer on one line: "HTTP 403: permission
// denied". The body is left out when it is not Vault's JSON error list.
func responseDetail(re *api.ResponseError) error {
	var msgs []string
	for _, e := range re.Errors {
		for _, line := range strings.Split(e, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasSuffix(line, "error occurred:") || strings.HasSuffix(line, "errors occurred:") {
				continue
			}
			msgs = append(msgs, strings.TrimPrefix(line, "* "))
		}
	}
	if re.RawError || len(msgs) == 0 {
		return fmt.Errorf("HTTP %d", re.StatusCode)
	}
	return fmt.Errorf("HTTP %d: %s", re.StatusCode, strings.Join(msgs, "; "))
}

// classified wraps err with its class so that the retry policy sees it.
func (p *Provider) classified(path string, err error) error {
	if err == nil {
		return nil
	}
	return p.classify(path, err)
}

// locate finds the mount of path and the path inside it.
func (p *Provider) locate(ctx context.Context, path string) (mount, string, error) {
	if m, rel, ok := p.cachedMount(path); ok {
		return m, rel, nil
	}
	// One lookup at a time, so that concurrent calls under a new mount
	// make one lookup between them.
	p.lookupMu.Lock()
	defer p.lookupMu.Unlock()
	if m, rel, ok := p.cachedMount(path); ok {
		return m, rel, nil
	}

	s, err := p.client.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+path)
	if err != nil {
		return mount{}, "", p.classified(path, err)
	}
	if s == nil || s.Data == nil {
		return mount{}, "", p.notFound(path, errors.New("no secrets engine is mounted there"))
	}
	mpath, _ := s.Data["path"].(string)
	mtype, _ := s.Data["type"].(string)
	if mtype != "kv" && mtype != "generic" {
		return mount{}, "", p.notFound(path, fmt.Errorf("mount %q is a %q engine, not kv", mpath, mtype))
	}
	m := mount{path: mpath, version: 1}
	if o, ok := s.Data["options"].(map[string]any); ok && o["version"] == "2" {
		m.version = 2
	}
	rel, ok := strings.CutPrefix(path, m.path)
	if !ok || rel == "" {
		return mount{}, "", p.notFound(path, fmt.Errorf("the path names the mount %q, not a secret in it", mpath))
	}
	p.mu.Lock()
	p.mounts = append(p.mounts, m)
	p.mu.Unlock()
	return m, m.relPath(rel), nil
}

func (p *Provider) cachedMount(path string) (mount, string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.mounts {
		if rel, ok := strings.CutPrefix(path, m.path); ok && rel != "" {
			return m, m.relPath(rel), true
		}
	}
	return mount{}, "", false
}

// relPath accepts KV v2's API form: "data/prod/db" is "prod/db".
func (m mount) relPath(rel string) string {
	if m.version == 2 {
		if r, ok := strings.CutPrefix(rel, "data/"); ok && r != "" {
			return r
		}
	}
	return rel
}

func (p *Provider) notFound(path string, detail error) error {
	return &provider.Error{Provider: p.name, Path: path, Kind: provider.ErrNotFound, Err: detail}
}

// read returns the data map of the secret at rel in m, as JSON, and its version.
func (p *Provider) read(ctx context.Context, m mount, rel string) ([]byte, string, error) {
	full := m.path + rel
	apiPath := full
	if m.version == 2 {
		apiPath = m.path + "data/" + rel
	}
	s, err := p.client.Logical().ReadWithContext(ctx, apiPath)
	if err != nil {
		return nil, "", p.classified(full, err)
	}
	if s == nil || s.Data == nil {
		return nil, "", p.notFound(full, nil)
	}
	data := s.Data
	if m.version == 2 {
		d, ok := s.Data["data"].(map[string]any)
		if !ok || d == nil {
			return nil, "", p.notFound(full, errors.New("the current version is deleted"))
		}
		data = d
	}
	value, err := json.Marshal(data)
	if err != nil {
		return nil, "", p.classified(full, fmt.Errorf("encoding the data map: %w", err))
	}
	if m.version == 1 {
		sum := sha256.Sum256(value)
		return value, "sha256:" + hex.EncodeToString(sum[:]), nil
	}
	meta, _ := s.Data["metadata"].(map[string]any)
	return value, fmt.Sprint(meta["version"]), nil
}

// readParentField reads "a/b/c" as field "c" of "a/b" when "a/b/c" is
// missing; it returns notFound when that does not work either.
func (p *Provider) readParentField(ctx context.Context, m mount, rel string, notFound error) ([]byte, string, error) {
	parent, field, ok := splitParent(rel)
	if !ok {
		return nil, "", notFound
	}
	data, version, err := p.read(ctx, m, parent)
	if err != nil {
		// The parent is only a guess: its failure (not found, or denied to
		// a token allowed the path itself) says nothing about path.
		return nil, "", notFound
	}
	v, err := provider.Field(data, field)
	if err != nil {
		return nil, "", notFound
	}
	return v, version, nil
}

func splitParent(rel string) (parent, field string, ok bool) {
	i := strings.LastIndexByte(rel, '/')
	if i <= 0 {
		return "", "", false
	}
	return rel[:i], rel[i+1:], true
}

// metadataVersion reads current_version from KV v2 metadata.
func (p *Provider) metadataVersion(ctx context.Context, m mount, rel string) (string, error) {
	full := m.path + rel
	s, err := p.client.Logical().ReadWithContext(ctx, m.path+"metadata/"+rel)
	if err != nil {
		return "", p.classified(full, err)
	}
	if s == nil || s.Data == nil {
		return "", p.notFound(full, nil)
	}
	v := fmt.Sprint(s.Data["current_version"])
	if v == "" || v == "0" || v == "<nil>" {
		return "", p.notFound(full, errors.New("no version"))
	}
	return v, nil
}
