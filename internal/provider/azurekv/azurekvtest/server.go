// Package azurekvtest is an Azure Key Vault test server: it speaks the Key
// Vault secrets REST API over TLS, with the bearer challenge, so that the
// official azsecrets client talks to it unchanged. No Key Vault emulator
// runs here (the known ones are Java or .NET), so the provider tests use
// this one. It covers what the provider uses: set a secret, get the latest
// or a given version, list a secret's versions; plus, for the tests, access
// denied for chosen names, a delay before each answer, and call counts.
package azurekvtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Host is the name the server answers to; a real vault's form, so that the
// client's challenge resource verification passes.
const Host = "dso-test.vault.azure.net"

// Server is a running test key vault.
type Server struct {
	// URL is the vault URL to give the client: https://dso-test.vault.azure.net.
	URL   string
	Token string // the bearer token it accepts

	ts   *httptest.Server
	pool *x509.CertPool

	mu      sync.Mutex
	secrets map[string][]version // by name, oldest first
	denied  map[string]bool
	delay   time.Duration
	cuts    int // answers of reads to cut short
	counts  map[string]int
}

type version struct {
	id      string
	value   string
	created time.Time
}

// New starts a server on a loopback port with a fresh self-signed
// certificate for Host.
func New() (*Server, error) {
	cert, pool, err := selfSigned()
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	s := &Server{
		URL: "https://" + Host, Token: hex.EncodeToString(tok), pool: pool,
		secrets: map[string][]version{}, denied: map[string]bool{}, counts: map[string]int{},
	}
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.ts.StartTLS()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { s.ts.Close() }

// Addr is the loopback host:port the server listens on.
func (s *Server) Addr() string { return s.ts.Listener.Addr().String() }

// HTTPClient returns a client that trusts the server's certificate and
// dials addr (normally Addr()) for any host.
func (s *Server) HTTPClient(addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.pool, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// Credential returns a token credential that hands out the server's token.
func (s *Server) Credential() azcore.TokenCredential { return staticToken(s.Token) }

type staticToken string

func (t staticToken) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if len(o.Scopes) != 1 || o.Scopes[0] != "https://vault.azure.net/.default" {
		return azcore.AccessToken{}, fmt.Errorf("unexpected scopes %v", o.Scopes)
	}
	return azcore.AccessToken{Token: string(t), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// Set stores a new version of name and returns its id.
func (s *Server) Set(name, value string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set(name, value)
}

func (s *Server) set(name, value string) string {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	v := version{id: hex.EncodeToString(id), value: value, created: time.Now()}
	s.secrets[name] = append(s.secrets[name], v)
	return v.id
}

// Deny makes every request for name answer 403, as a missing access policy does.
func (s *Server) Deny(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[name] = true
}

// SetDelay holds every answer for d.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// CutAnswers cuts the next n answers of reads (get, versions) short: the
// status is 200, the JSON stops halfway.
func (s *Server) CutAnswers(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cuts = n
}

// Counts returns the authenticated calls per operation ("get", "versions",
// "set") since the last Reset.
func (s *Server) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.counts {
		out[k] = v
	}
	return out
}

// Reset zeroes the counts.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = map[string]int{}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	delay := s.delay
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if r.URL.Query().Get("api-version") == "" {
		writeError(w, http.StatusBadRequest, "BadParameter", "The api-version query parameter is required")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"`)
		writeError(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	// /secrets/{name}, /secrets/{name}/, /secrets/{name}/{version}, /secrets/{name}/versions
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/secrets/"), "/")
	if !strings.HasPrefix(r.URL.Path, "/secrets/") || parts[0] == "" || len(parts) > 2 {
		writeError(w, http.StatusNotFound, "NotFound", "no such operation")
		return
	}
	name, sub := parts[0], ""
	if len(parts) == 2 {
		sub = parts[1]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.denied[name] {
		writeError(w, http.StatusForbidden, "Forbidden", "The user, group or application does not have secrets get permission on this key vault.")
		return
	}
	switch {
	case r.Method == http.MethodPut && sub == "":
		s.counts["set"]++
		var body struct {
			Value *string `json:"value"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Value == nil {
			writeError(w, http.StatusBadRequest, "BadParameter", "want {\"value\": ...}")
			return
		}
		s.set(name, *body.Value)
		vs := s.secrets[name]
		writeJSON(w, s.bundle(name, vs[len(vs)-1], true))
	case r.Method == http.MethodGet && sub == "versions":
		s.counts["versions"]++
		vs, ok := s.secrets[name]
		if !ok {
			writeError(w, http.StatusNotFound, "SecretNotFound", "A secret with (name/id) "+name+" was not found in this key vault.")
			return
		}
		items := make([]map[string]any, len(vs))
		for i, v := range vs {
			items[i] = s.bundle(name, v, false)
		}
		s.read(w, map[string]any{"value": items, "nextLink": nil})
	case r.Method == http.MethodGet:
		s.counts["get"]++
		vs := s.secrets[name]
		for i := len(vs) - 1; i >= 0; i-- {
			if sub == "" || vs[i].id == sub {
				s.read(w, s.bundle(name, vs[i], true))
				return
			}
		}
		writeError(w, http.StatusNotFound, "SecretNotFound", "A secret with (name/id) "+name+"/"+sub+" was not found in this key vault.")
	default:
		writeError(w, http.StatusMethodNotAllowed, "BadRequest", "method not allowed")
	}
}

// bundle is a SecretBundle (withValue) or a SecretItem.
func (s *Server) bundle(name string, v version, withValue bool) map[string]any {
	b := map[string]any{
		"id": s.URL + "/secrets/" + name + "/" + v.id,
		"attributes": map[string]any{
			"enabled": true, "created": v.created.Unix(), "updated": v.created.Unix(), "recoveryLevel": "Recoverable+Purgeable",
		},
	}
	if withValue {
		b["value"] = v.value
	}
	return b
}

// read writes the answer of a read, cut short when asked (s.mu held).
func (s *Server) read(w http.ResponseWriter, v any) {
	if s.cuts == 0 {
		writeJSON(w, v)
		return
	}
	s.cuts--
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(b[:len(b)/2])
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// selfSigned makes a certificate for Host and a pool that trusts it.
func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: Host},
		DNSNames:              []string{Host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
