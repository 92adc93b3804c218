// Package azurekv reads secrets from Azure Key Vault with the official
// azsecrets client and azidentity's DefaultAzureCredential (environment
// client secret or certificate, workload identity, managed identity, Azure
// CLI, Azure Developer CLI).
//
// Names: Key Vault allows only letters, digits and '-' (1 to 127 of them),
// so a path is mapped: '_' and '/' become '-' ("myapp/db_password" is the
// secret "myapp-db-password"). Any other character ('.', '@', ':' ...) is
// refused with an error naming it. Two paths that differ only in '_', '/'
// and '-' name the same secret. "NAME::VERSION" reads one version.
//
// Version lists the secret's versions (properties only, no value) and takes
// the newest by creation time; if two versions were created in the same
// second it reads the latest version to learn its id, which fetches the
// value.
package azurekv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/retry"
)

// Options configure an Azure Key Vault provider.
type Options struct {
	Name     string // provider name in errors; "azure" if empty
	VaultURL string // https://NAME.vault.azure.net
	Retry    retry.Policy
	// Credential replaces DefaultAzureCredential; for tests and embedding.
	Credential azcore.TokenCredential
	// HTTPClient carries the requests; http.DefaultClient's transport if nil.
	HTTPClient *http.Client
}

// Provider reads secrets from one key vault.
type Provider struct {
	name   string
	client *azsecrets.Client
	retry  retry.Policy
}

// New checks opts and returns a provider. It makes no network call.
func New(opts Options) (*Provider, error) {
	name := opts.Name
	if name == "" {
		name = "azure"
	}
	bad := func(format string, a ...any) (*Provider, error) {
		return nil, fmt.Errorf("provider %q: %s", name, fmt.Sprintf(format, a...))
	}
	if err := opts.Retry.Validate(); err != nil {
		return bad("%v", err)
	}
	u, err := url.Parse(opts.VaultURL)
	if opts.VaultURL == "" || err != nil || u.Scheme != "https" || u.Host == "" {
		return bad("vault_url %q: want https://NAME.vault.azure.net", opts.VaultURL)
	}
	cred := opts.Credential
	if cred == nil {
		cred, err = azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return bad("Azure credential: %v", err)
		}
	}
	co := &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{
		Retry: policy.RetryOptions{MaxRetries: -1}, // the retry policy is ours
	}}
	if opts.HTTPClient != nil {
		co.Transport = opts.HTTPClient
	}
	client, err := azsecrets.NewClient(opts.VaultURL, cred, co)
	if err != nil {
		return bad("%v", err)
	}
	return &Provider{name: name, client: client, retry: opts.Retry.WithDefaults()}, nil
}

// SecretName maps a path to a Key Vault secret name and version ("" for
// the latest), or says which character Key Vault cannot take.
func SecretName(path string) (name, version string, err error) {
	name, version, _ = strings.Cut(path, "::")
	var b strings.Builder
	for i, c := range name {
		switch {
		case c == '_' || c == '/':
			b.WriteByte('-')
		case c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			b.WriteRune(c)
		default:
			return "", "", fmt.Errorf("character %q at %d: Key Vault names take only letters, digits and '-' ('_' and '/' are mapped to '-')", c, i+1)
		}
	}
	name = b.String()
	if name == "" || len(name) > 127 {
		return "", "", fmt.Errorf("Key Vault names are 1 to 127 characters, this one maps to %d", len(name))
	}
	for _, c := range version {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return "", "", fmt.Errorf("version %q: want the version id (letters and digits)", version)
		}
	}
	return name, version, nil
}

// Get returns the value of the latest (or selected) version and its id.
func (p *Provider) Get(ctx context.Context, path string) (provider.Secret, error) {
	name, version, err := SecretName(path)
	if err != nil {
		return provider.Secret{}, &provider.Error{Provider: p.name, Path: path, Err: err}
	}
	var out provider.Secret
	err = p.retry.Do(ctx, func(ctx context.Context) error {
		var raw *http.Response
		resp, err := p.client.GetSecret(runtime.WithCaptureResponse(ctx, &raw), name, version, nil)
		if err != nil {
			return p.classify(path, err, raw)
		}
		if resp.Value == nil || resp.ID == nil {
			return &provider.Error{Provider: p.name, Path: path, Kind: provider.ErrNotFound, Err: errors.New("the answer has no value")}
		}
		out = provider.Secret{Value: []byte(*resp.Value), Version: resp.ID.Version()}
		return nil
	})
	return out, err
}

// Version returns the id of the newest version from the version list.
func (p *Provider) Version(ctx context.Context, path string) (string, error) {
	name, version, err := SecretName(path)
	if err != nil {
		return "", &provider.Error{Provider: p.name, Path: path, Err: err}
	}
	var newest string
	var tie bool
	err = p.retry.Do(ctx, func(ctx context.Context) error {
		newest, tie = "", false
		var newestAt time.Time
		pager := p.client.NewListSecretPropertiesVersionsPager(name, nil)
		for pager.More() {
			var raw *http.Response
			page, err := pager.NextPage(runtime.WithCaptureResponse(ctx, &raw))
			if err != nil {
				return p.classify(path, err, raw)
			}
			for _, v := range page.Value {
				if v == nil || v.ID == nil {
					continue
				}
				id := v.ID.Version()
				if version != "" {
					if id == version {
						newest = id
					}
					continue
				}
				var at time.Time
				if v.Attributes != nil && v.Attributes.Created != nil {
					at = *v.Attributes.Created
				}
				switch {
				case newest == "" || at.After(newestAt):
					newest, newestAt, tie = id, at, false
				case at.Equal(newestAt):
					tie = true
				}
			}
		}
		if newest == "" {
			return &provider.Error{Provider: p.name, Path: path, Kind: provider.ErrNotFound}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if tie {
		s, err := p.Get(ctx, path)
		return s.Version, err
	}
	return newest, nil
}

// classify turns an azsecrets error into a provider.Error; raw is the
// answer, when one came.
func (p *Provider) classify(path string, err error, raw *http.Response) error {
	e := &provider.Error{Provider: p.name, Path: path}
	var re *azcore.ResponseError
	switch {
	case errors.As(err, &re):
		e.Kind = retry.HTTPStatus(re.StatusCode)
		e.Err = fmt.Errorf("HTTP %d %s", re.StatusCode, re.ErrorCode)
		return e
	case raw != nil && raw.StatusCode >= 200 && raw.StatusCode < 300 &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled):
		// The SDK's error quotes the JSON decoder's, which may quote
		// the body; another attempt may read it.
		e.Kind = provider.ErrUnreachable
		e.Err = fmt.Errorf("HTTP %d, but %w", raw.StatusCode, retry.ErrUnreadable)
		return e
	}
	e.Kind = retry.Transport(err)
	e.Err = retry.TimeoutDetail(err, p.retry.Timeout)
	var ae *azidentity.AuthenticationFailedError
	if errors.As(err, &ae) {
		e.Kind = provider.ErrDenied
		e.Err = errors.New("Azure authentication failed; check the credential (az login, managed identity, AZURE_CLIENT_ID...)")
	}
	return e
}
