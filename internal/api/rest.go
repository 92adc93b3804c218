package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/signature"
)

// DefaultRESTAddr is where the REST API listens by default.
const DefaultRESTAddr = "127.0.0.1:8471"

// Endpoints of the REST API that RESTConfig.Open can serve without the
// token.
const (
	EndpointHealth  = "health"
	EndpointMetrics = "metrics"
	EndpointEvents  = "events"
)

// OpenableEndpoints are the values RESTConfig.Open may hold.
var OpenableEndpoints = []string{EndpointHealth, EndpointMetrics, EndpointEvents}

// RESTConfig sets up the REST API.
type RESTConfig struct {
	Addr string // DefaultRESTAddr when empty
	// Token, when set, authenticates callers (Authorization: Bearer). It
	// must be set when Addr is not a loopback address.
	Token string
	// Open lists the endpoints served without the token. GET /health is
	// open anyway while no token is set: any local user may see that the
	// agent is up. GET /metrics and GET /events are closed unless listed
	// here: they show which projects, services and secrets a host runs,
	// and the agent's socket serves them to the users it trusts.
	Open []string
	// WebhookToken and WebhookSecret authenticate POST /webhook: a bearer
	// token, or a signature (package signature: a timestamp within 5
	// minutes and an HMAC-SHA256 of it and the body, each used once).
	// With neither set, and no Token, the webhook is off.
	WebhookToken  string
	WebhookSecret []byte

	Health   HealthSource         // required
	Registry *prometheus.Registry // required: what /metrics serves
	Bus      *events.Bus          // required: what /events streams
	Trigger  Trigger              // required: what a webhook calls

	// Rate and Burst limit the requests of each client, after
	// authentication: an authenticated caller has a bucket per
	// credential, an anonymous one a bucket per IP address, so that no
	// flood of anonymous requests refuses an authenticated webhook (20
	// and 40 when zero).
	Rate  rate.Limit
	Burst int
	Log   *slog.Logger
	Now   func() time.Time // time.Now when nil
}

// REST is the REST API server.
type REST struct {
	cfg    RESTConfig
	open   map[string]bool
	srv    *http.Server
	ln     net.Listener
	limits *clientLimits
	seen   *seenSignatures
	stop   chan struct{}
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	open := map[string]bool{EndpointHealth: cfg.Token == ""}
	for _, e := range cfg.Open {
		if !slices.Contains(OpenableEndpoints, e) {
			return nil, fmt.Errorf("REST API: cannot open %q: the endpoints that can be opened are %s", e, strings.Join(OpenableEndpoints, ", "))
		}
		open[e] = true
	}
	s := &REST{cfg: cfg, open: open, limits: newClientLimits(cfg.Rate, cfg.Burst, 10000), seen: newSeenSignatures(), stop: make(chan struct{})}
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

// caller is who sent a request, as far as the REST API can tell.
type caller struct {
	// key names the caller's rate-limit bucket: the credential it proved,
	// else its IP address.
	key           string
	authenticated bool
	// refused says why a webhook's authentication failed.
	refused error
}

// identify authenticates r. A webhook's body is read here (it is signed)
// and put back for the handler.
func (s *REST) identify(r *http.Request) (caller, error) {
	if s.cfg.Token != "" && tokenMatches(r, s.cfg.Token) {
		return caller{key: "token", authenticated: true}, nil
	}
	if r.URL.Path == "/webhook" {
		if s.cfg.WebhookToken != "" && tokenMatches(r, s.cfg.WebhookToken) {
			return caller{key: "webhook-token", authenticated: true}, nil
		}
		if len(s.cfg.WebhookSecret) > 0 && r.Header.Get(signature.Header) != "" {
			body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
			if err != nil {
				return caller{}, err
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if len(body) <= maxBody {
				err := s.verify(r, body)
				if err == nil {
					return caller{key: "webhook-signature", authenticated: true}, nil
				}
				return caller{key: clientIP(r), refused: err}, nil
			}
		}
	}
	return caller{key: clientIP(r)}, nil
}

// verify checks a webhook's signature, and that it was not used before.
func (s *REST) verify(r *http.Request, body []byte) error {
	ts, sig := r.Header.Get(signature.TimestampHeader), r.Header.Get(signature.Header)
	now := s.cfg.Now()
	if err := signature.Verify(s.cfg.WebhookSecret, body, ts, sig, now); err != nil {
		return err
	}
	if !s.seen.add(sig, now) {
		return errReplayed
	}
	return nil
}

var errReplayed = errors.New("this signature was used before (a replay): sign each request anew")

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return "ip:" + r.RemoteAddr
	}
	return "ip:" + host
}

// endpointOf names the endpoint of a path for RESTConfig.Open.
func endpointOf(path string) string {
	return strings.TrimPrefix(path, "/")
}

// guard authenticates each request, then applies its caller's rate limit,
// then decides: the webhook checks its own credentials; other endpoints
// need the token unless they are open.
func (s *REST) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.identify(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, "reading the request body failed")
			return
		}
		if !s.limits.allow(c.key, s.cfg.Now()) {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, "too many requests; retry later")
			return
		}
		if c.authenticated {
			next.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/webhook" {
			s.refuseWebhook(w, r, c.refused)
			return
		}
		if s.open[endpointOf(r.URL.Path)] {
			next.ServeHTTP(w, r)
			return
		}
		if s.cfg.Token != "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dso"`)
			writeError(w, http.StatusUnauthorized, "an API token is required: send Authorization: Bearer <token>")
			return
		}
		writeError(w, http.StatusForbidden, fmt.Sprintf("%s %s is closed: set agent.api.token in dso.yaml and send it as a bearer token, use the agent's socket (docker dso status, docker dso watch), or open it with agent.api.open: [%s]", r.Method, r.URL.Path, endpointOf(r.URL.Path)))
	})
}

func (s *REST) refuseWebhook(w http.ResponseWriter, r *http.Request, why error) {
	if s.cfg.WebhookToken == "" && len(s.cfg.WebhookSecret) == 0 && s.cfg.Token == "" {
		writeError(w, http.StatusNotFound, "the webhook is not configured: set a webhook token or secret in dso.yaml")
		return
	}
	if why == nil {
		why = errors.New("send a valid bearer token, or " + signature.TimestampHeader + " and " + signature.Header)
	}
	s.cfg.Log.Warn("webhook refused", "remote", r.RemoteAddr, "reason", why.Error())
	writeError(w, http.StatusUnauthorized, "webhook authentication failed: "+why.Error())
}

func (s *REST) webhook(w http.ResponseWriter, r *http.Request) {
	if body, ok := readBody(w, r); ok {
		runCheck(w, body, s.cfg.Trigger)
	}
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

// seenSignatures remembers the webhook signatures accepted within the
// window, so that each is used once. Only authenticated requests are
// remembered, and those are rate limited, so it stays small.
type seenSignatures struct {
	mu        sync.Mutex
	sigs      map[string]time.Time
	lastPrune time.Time
}

func newSeenSignatures() *seenSignatures { return &seenSignatures{sigs: map[string]time.Time{}} }

// add records sig at now; false when it was already there.
func (s *seenSignatures) add(sig string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastPrune) > signature.Window {
		for k, t := range s.sigs {
			if now.Sub(t) > 2*signature.Window {
				delete(s.sigs, k)
			}
		}
		s.lastPrune = now
	}
	if _, ok := s.sigs[sig]; ok {
		return false
	}
	s.sigs[sig] = now
	return true
}
