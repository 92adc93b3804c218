package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/signature"
)

const canary = "CANARY-api-52d1c0"

type recorder struct {
	mu    sync.Mutex
	calls [][]string
}

func (r *recorder) trigger(names []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range names {
		if n == "unknown" {
			return fmt.Errorf("secret %q is not watched", n)
		}
	}
	r.calls = append(r.calls, names)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func okHealth(context.Context) AgentStatus { return AgentStatus{Health: HealthOK, Version: "test"} }

type restHarness struct {
	srv  *REST
	url  string
	bus  *events.Bus
	rec  *recorder
	m    *metrics.Metrics
	done chan error
	stop context.CancelFunc
}

func startREST(t *testing.T, mod func(*RESTConfig)) *restHarness {
	t.Helper()
	h := &restHarness{bus: events.NewBus(100), rec: &recorder{}, m: metrics.New(), done: make(chan error, 1)}
	cfg := RESTConfig{Addr: "127.0.0.1:0", Health: okHealth, Registry: h.m.Registry, Bus: h.bus, Trigger: h.rec.trigger, WebhookSecret: []byte(canary)}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewREST(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	h.srv, h.url = srv, "http://"+srv.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() { h.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
		h.done <- nil
	})
	return h
}

func request(t *testing.T, method, url string, body []byte, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(raw), canary) {
		t.Fatalf("%s %s: response holds the canary", method, url)
	}
	return resp.StatusCode, string(raw)
}

func TestRESTHealthAndMetrics(t *testing.T) {
	h := startREST(t, func(c *RESTConfig) { c.Open = []string{EndpointMetrics} })
	h.m.SecretsWatched.Set(3)
	if code, body := request(t, "GET", h.url+"/health", nil, nil); code != 200 || !strings.Contains(body, `"health":"ok"`) {
		t.Fatalf("health: %d %s", code, body)
	}
	if code, body := request(t, "GET", h.url+"/metrics", nil, nil); code != 200 || !strings.Contains(body, "dso_secrets_watched 3") {
		t.Fatalf("metrics: %d %s", code, body)
	}
	if code, _ := request(t, "DELETE", h.url+"/health", nil, nil); code != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE /health = %d", code)
	}
}

func TestRESTUnhealthyIs503(t *testing.T) {
	h := startREST(t, func(c *RESTConfig) {
		c.Health = func(context.Context) AgentStatus {
			return AgentStatus{Health: HealthDegraded, Problems: []string{"provider aws unreachable"}}
		}
	})
	if code, body := request(t, "GET", h.url+"/health", nil, nil); code != 503 || !strings.Contains(body, "unreachable") {
		t.Fatalf("health: %d %s", code, body)
	}
}

// signed returns the headers of body signed under the test's secret at t.
func signed(key string, t time.Time, body []byte) map[string]string {
	ts, sig := signature.Sign([]byte(key), t, body)
	return map[string]string{signature.TimestampHeader: ts, signature.Header: sig}
}

func TestWebhookAuthentication(t *testing.T) {
	now := time.Now()
	h := startREST(t, func(c *RESTConfig) { c.WebhookToken = "hook-token"; c.Now = func() time.Time { return now } })
	body := []byte(`{"secrets":["db"]}`)
	good := signed(canary, now, body)
	cases := []struct {
		name   string
		header map[string]string
		want   int
		reason string
	}{
		{"none", nil, 401, "bearer token"},
		{"bad signature", signed("wrong", now, body), 401, "does not match"},
		{"garbage signature", map[string]string{signature.TimestampHeader: good[signature.TimestampHeader], signature.Header: "sha256=zz"}, 401, "malformed"},
		{"signature of another body", signed(canary, now, []byte(`{}`)), 401, "does not match"},
		{"signature without timestamp", map[string]string{signature.Header: good[signature.Header]}, 401, "malformed"},
		{"signed 6 minutes ago", signed(canary, now.Add(-6*time.Minute), body), 401, "window"},
		{"wrong bearer", map[string]string{"Authorization": "Bearer nope"}, 401, "bearer token"},
		{"good signature", good, 202, ""},
		{"the same signature again (a replay)", good, 401, "replay"},
		{"signed 4 minutes ago", signed(canary, now.Add(-4*time.Minute), body), 202, ""},
		{"good bearer", map[string]string{"Authorization": "Bearer hook-token"}, 202, ""},
	}
	accepted := 0
	for _, c := range cases {
		code, resp := request(t, "POST", h.url+"/webhook", body, c.header)
		if code != c.want || !strings.Contains(resp, c.reason) {
			t.Errorf("%s: %d %s, want %d saying %q", c.name, code, resp, c.want, c.reason)
		}
		if code == 202 {
			accepted++
		}
		if h.rec.count() != accepted {
			t.Fatalf("%s: trigger called %d times, want %d", c.name, h.rec.count(), accepted)
		}
	}
	unknown := []byte(`{"secrets":["unknown"]}`)
	if code, resp := request(t, "POST", h.url+"/webhook", unknown, signed(canary, now, unknown)); code != 404 || !strings.Contains(resp, "unknown") {
		t.Fatalf("unknown secret: %d %s", code, resp)
	}
	bad := []byte(`not json`)
	if code, _ := request(t, "POST", h.url+"/webhook", bad, signed(canary, now, bad)); code != 400 {
		t.Fatalf("malformed body: %d", code)
	}
}

func TestWebhookOffWithoutCredentials(t *testing.T) {
	h := startREST(t, func(c *RESTConfig) { c.WebhookSecret = nil })
	if code, _ := request(t, "POST", h.url+"/webhook", nil, nil); code != 404 || h.rec.count() != 0 {
		t.Fatalf("unconfigured webhook answered %d", code)
	}
}

func TestTokenRequiredEverywhereWhenSet(t *testing.T) {
	h := startREST(t, func(c *RESTConfig) { c.Token = "api-token" })
	for _, p := range []string{"/health", "/metrics", "/events?follow=false"} {
		if code, _ := request(t, "GET", h.url+p, nil, nil); code != 401 {
			t.Errorf("GET %s without token = %d, want 401", p, code)
		}
		if code, _ := request(t, "GET", h.url+p, nil, map[string]string{"Authorization": "Bearer api-token"}); code != 200 {
			t.Errorf("GET %s with token = %d, want 200", p, code)
		}
	}
	if code, _ := request(t, "POST", h.url+"/webhook", []byte(`{}`), map[string]string{"Authorization": "Bearer api-token"}); code != 202 {
		t.Errorf("webhook with the API token = %d", code)
	}
}

func TestMetricsAndEventsClosedUnlessOpened(t *testing.T) {
	h := startREST(t, nil)
	for _, p := range []string{"/metrics", "/events?follow=false"} {
		if code, body := request(t, "GET", h.url+p, nil, nil); code != 403 || !strings.Contains(body, "agent.api.open") {
			t.Errorf("GET %s without a token configured = %d %s, want 403 naming agent.api.open", p, code, body)
		}
	}
	if code, _ := request(t, "GET", h.url+"/health", nil, nil); code != 200 {
		t.Errorf("GET /health = %d, want 200 (open while no token is set)", code)
	}

	h = startREST(t, func(c *RESTConfig) { c.Open = []string{EndpointMetrics} })
	if code, _ := request(t, "GET", h.url+"/metrics", nil, nil); code != 200 {
		t.Errorf("GET /metrics opened = %d", code)
	}
	if code, _ := request(t, "GET", h.url+"/events?follow=false", nil, nil); code != 403 {
		t.Errorf("GET /events not opened = %d", code)
	}

	h = startREST(t, func(c *RESTConfig) { c.Token, c.Open = "api-token", []string{EndpointHealth} })
	if code, _ := request(t, "GET", h.url+"/health", nil, nil); code != 200 {
		t.Errorf("GET /health opened beside a token = %d", code)
	}
	if code, _ := request(t, "GET", h.url+"/metrics", nil, nil); code != 401 {
		t.Errorf("GET /metrics with a token set, not sent = %d", code)
	}

	cfg := RESTConfig{Health: okHealth, Registry: metrics.New().Registry, Bus: events.NewBus(1), Trigger: (&recorder{}).trigger, Open: []string{"webhook"}}
	if _, err := NewREST(cfg); err == nil || !strings.Contains(err.Error(), `"webhook"`) {
		t.Errorf("opening the webhook: %v", err)
	}
}

func TestNonLoopbackNeedsToken(t *testing.T) {
	base := RESTConfig{Health: okHealth, Registry: metrics.New().Registry, Bus: events.NewBus(1), Trigger: (&recorder{}).trigger}
	for _, addr := range []string{"0.0.0.0:8471", ":8471", "192.0.2.1:8471"} {
		cfg := base
		cfg.Addr = addr
		if _, err := NewREST(cfg); err == nil || !strings.Contains(err.Error(), "token") {
			t.Errorf("%s without token: %v", addr, err)
		}
	}
	cfg := base
	cfg.Addr = "localhost:8471"
	if _, err := NewREST(cfg); err != nil {
		t.Errorf("localhost without token: %v", err)
	}
	cfg.Addr = "nonsense"
	if _, err := NewREST(cfg); err == nil {
		t.Error("a bad address was accepted")
	}
}

func TestRateLimit(t *testing.T) {
	h := startREST(t, func(c *RESTConfig) { c.Rate, c.Burst = 0.001, 2 })
	codes := []int{}
	for range 3 {
		code, _ := request(t, "GET", h.url+"/health", nil, nil)
		codes = append(codes, code)
	}
	if fmt.Sprint(codes) != "[200 200 429]" {
		t.Fatalf("codes = %v, want [200 200 429]", codes)
	}
}

// An anonymous client that spent its budget does not spend an
// authenticated caller's: each signed webhook still gets through.
func TestRateLimitIsPerClientAfterAuthentication(t *testing.T) {
	h := startREST(t, func(c *RESTConfig) { c.Rate, c.Burst, c.Token = 0.001, 3, "api-token" })
	for range 5 {
		request(t, "GET", h.url+"/health", nil, nil)
	}
	if code, _ := request(t, "GET", h.url+"/health", nil, nil); code != 429 {
		t.Fatalf("the anonymous flood was not limited: %d", code)
	}
	body := []byte(`{}`)
	for i := range 3 {
		if code, resp := request(t, "POST", h.url+"/webhook", body, signed(canary, time.Now().Add(time.Duration(i)*time.Second), body)); code != 202 {
			t.Fatalf("signed webhook %d beside the flood: %d %s", i, code, resp)
		}
	}
	if code, _ := request(t, "GET", h.url+"/metrics", nil, map[string]string{"Authorization": "Bearer api-token"}); code != 200 {
		t.Fatalf("a caller with the token beside the flood: %d", code)
	}
	if code, _ := request(t, "POST", h.url+"/webhook", body, signed("wrong", time.Now(), body)); code != 429 {
		t.Fatalf("a badly signed webhook spends the anonymous budget: %d, want 429", code)
	}
}

func TestClientLimitsForgetIdleClients(t *testing.T) {
	l := newClientLimits(10, 1, 2)
	now := time.Unix(0, 0)
	if !l.allow("a", now) || !l.allow("b", now) {
		t.Fatal("new clients refused")
	}
	if l.allow("c", now) {
		t.Fatal("a third client was tracked beyond max")
	}
	if !l.allow("c", now.Add(time.Second)) {
		t.Fatal("idle clients were not forgotten")
	}
}

func TestEventsStreamAndShutdown(t *testing.T) {
	h := startREST(t, func(c *RESTConfig) { c.Token = "api-token" })
	h.bus.Publish(events.Event{Type: events.TypeDelivery, Service: "old"})
	c, err := NewRESTClient(h.url, "api-token")
	if err != nil {
		t.Fatal(err)
	}
	var past []events.Event
	if err := c.Events(context.Background(), 10, false, func(e events.Event) error { past = append(past, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(past) != 1 || past[0].Service != "old" {
		t.Fatalf("history = %+v", past)
	}

	got := make(chan events.Event, 10)
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- c.Events(context.Background(), 0, true, func(e events.Event) error { got <- e; return nil })
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.bus.Publish(events.Event{Type: events.TypeRotation, Service: "web", Result: "succeeded"})
		select {
		case e := <-got:
			if e.Type != events.TypeRotation || e.Service != "web" {
				t.Fatalf("event = %+v", e)
			}
		case <-time.After(50 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no live event")
			}
			continue
		}
		break
	}
	h.stop()
	select {
	case err := <-streamDone:
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Logf("stream ended with %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("an open event stream kept the server from shutting down")
	}
}
