package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/dso-project/dso/internal/api/events"
)

// DefaultRESTAddr is where the REST API listens by default.
const DefaultRESTAddr = "127.0.0.1:8471"

// SignatureHeader carries the HMAC-SHA256 of a webhook body:
// "sha256=" followed by the hex digest.
const SignatureHeader = "X-DSO-Signature"

// RESTConfig sets up the REST API.
type RESTConfig struct {
	Addr string // DefaultRESTAddr when empty
	// Token, when set, is required (Authorization: Bearer) on every
	// request. It must be set when Addr is not a loopback address.
	Token string
	// WebhookToken and WebhookSecret authenticate POST /webhook: a bearer
	// token, or an HMAC-SHA256 signature of the body in SignatureHeader.
	// With neither set, the webhook is off.
	WebhookToken  string
	WebhookSecret []byte

	Health   HealthSource         // required
	Registry *prometheus.Registry // required: what /metrics serves
	Bus      *events.Bus          // required: what /events streams
	Trigger  Trigger              // required: what a webhook calls

	// Rate and Burst limit requests per second over all clients
	// (20 and 40 when zero).
	Rate  rate.Limit
	Burst int
	Log   *slog.Logger
}

// REST is the REST API server.
type REST struct {
	cfg     RESTConfig
	srv     *http.Server
	ln      net.Listener
	limiter *rate.Limiter
	stop    chan struct{}
}

// NewREST checks cfg and returns a server; Listen then Run start it.
func NewREST(cfg RESTConfig) (*REST, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultRESTAddr
	}
	if cfg.Health == nil || cfg.Registry == nil || cfg.Bus == nil || cfg.Trigger == nil {
		return nil, errors.New("REST API: health, metrics registry, event bus and trigger are all required")
	}
	loopback, err := isLoopback(cfg.Addr)
	if err != nil {
		return nil, err
	}
	if !loopback && cfg.Token == "" {
		return nil, fmt.Errorf("REST API address %s is not loopback: set an API token (agent.api.token) or bind to 127.0.0.1", cfg.Addr)
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 20
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 40
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &REST{cfg: cfg, limiter: rate.NewLimiter(cfg.Rate, cfg.Burst), stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("GET /health", healthHandler(cfg.Health))
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	mux.Handle("GET /events", eventsHandler(cfg.Bus, s.stop))
	mux.HandleFunc("POST /webhook", s.webhook)
	s.srv = &http.Server{
		Handler:           s.guard(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// isLoopback tells whether the host of addr only listens on loopback.
func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("REST API address %q: want host:port (%v)", addr, err)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// Listen binds the address, so that a port in use is reported before Run.
func (s *REST) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("REST API: %w", err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address (after Listen).
func (s *REST) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx is cancelled, then shuts down gracefully (open event
// streams end at once, other requests get up to 5s). A cancel is not an
// error.
func (s *REST) Run(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	return serveUntil(ctx, s.srv, func() error { return s.srv.Serve(s.ln) }, s.stop, 5*time.Second)
}

// guard applies the rate limit, then the API token when one is set. The
// webhook may instead carry its own authentication.
func (s *REST) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.limiter.Allow() {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, "too many requests; retry later")
			return
		}
		if s.cfg.Token != "" && !tokenMatches(r, s.cfg.Token) && r.URL.Path != "/webhook" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dso"`)
			writeError(w, http.StatusUnauthorized, "an API token is required: send Authorization: Bearer <token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *REST) webhook(w http.ResponseWriter, r *http.Request) {
	if s.cfg.WebhookToken == "" && len(s.cfg.WebhookSecret) == 0 && s.cfg.Token == "" {
		writeError(w, http.StatusNotFound, "the webhook is not configured: set a webhook token or secret in dso.yaml")
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	if !s.webhookAuthorized(r, body) {
		s.cfg.Log.Warn("webhook refused: bad or missing authentication", "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "webhook authentication failed: send a valid bearer token or "+SignatureHeader+": sha256=<hex HMAC of the body>")
		return
	}
	runCheck(w, body, s.cfg.Trigger)
}

func (s *REST) webhookAuthorized(r *http.Request, body []byte) bool {
	if s.cfg.WebhookToken != "" && tokenMatches(r, s.cfg.WebhookToken) {
		return true
	}
	if s.cfg.Token != "" && tokenMatches(r, s.cfg.Token) {
		return true
	}
	if len(s.cfg.WebhookSecret) > 0 {
		return SignatureValid(s.cfg.WebhookSecret, body, r.Header.Get(SignatureHeader))
	}
	return false
}

// tokenMatches compares the bearer token in constant time.
func tokenMatches(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// Sign returns the SignatureHeader value for body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// SignatureValid checks a SignatureHeader value in constant time.
func SignatureValid(secret, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	sig, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(sig, m.Sum(nil))
}
