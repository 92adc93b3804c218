package notify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/signature"
)

var secret = []byte("CANARY-notify-signing-key")

// liveness bounds a wait for something that happens at once: generous, so
// that a loaded machine never fails a test, yet a hang still ends.
const liveness = time.Minute

// eventually polls cond until it holds, failing after liveness.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(liveness); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

type endpoint struct {
	mu        sync.Mutex
	bodies    []Notification
	deliverys []string
	fails     int32 // answer 503 this many times first
	status    int   // then answer this (200 when 0)
	hits      atomic.Int32
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := e.hits.Add(1)
	body, _ := io.ReadAll(r.Body)
	if err := signature.Verify(secret, body, r.Header.Get(signature.TimestampHeader), r.Header.Get(signature.Header), time.Now()); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	e.mu.Lock()
	e.deliverys = append(e.deliverys, r.Header.Get(DeliveryHeader))
	e.mu.Unlock()
	if n <= e.fails {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	if e.status != 0 {
		http.Error(w, "no", e.status)
		return
	}
	var nt Notification
	json.Unmarshal(body, &nt)
	e.mu.Lock()
	e.bodies = append(e.bodies, nt)
	e.mu.Unlock()
}

func newNotifier(t *testing.T, url string, mod func(*Config)) *Notifier {
	t.Helper()
	cfg := Config{URL: url, Secret: secret, Backoff: time.Millisecond, Timeout: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSignedDeliveryWithRetries(t *testing.T) {
	ep := &endpoint{fails: 2}
	srv := httptest.NewServer(ep)
	defer srv.Close()
	n := newNotifier(t, srv.URL, nil)
	err := n.Send(context.Background(), Notification{Event: EventRotationSucceeded, Service: "web", Strategy: "restart", Secrets: []string{"db"}})
	if err != nil {
		t.Fatal(err)
	}
	if ep.hits.Load() != 3 || len(ep.bodies) != 1 || ep.bodies[0].Service != "web" {
		t.Fatalf("hits %d, bodies %+v", ep.hits.Load(), ep.bodies)
	}
	if ep.deliverys[0] == "" || ep.deliverys[0] != ep.deliverys[2] {
		t.Fatalf("delivery ids %v: want one id kept across retries", ep.deliverys)
	}
}

func TestGivesUpAfterAttempts(t *testing.T) {
	ep := &endpoint{fails: 100}
	srv := httptest.NewServer(ep)
	defer srv.Close()
	err := newNotifier(t, srv.URL, func(c *Config) { c.Attempts = 3 }).Send(context.Background(), Notification{Event: EventRotationFailed})
	if err == nil || ep.hits.Load() != 3 || !strings.Contains(err.Error(), "503") {
		t.Fatalf("err %v after %d hits", err, ep.hits.Load())
	}
	if strings.Contains(err.Error(), string(secret)) {
		t.Fatal("the signing secret is in the error")
	}
}

func TestClientErrorIsNotRetried(t *testing.T) {
	ep := &endpoint{status: http.StatusBadRequest}
	srv := httptest.NewServer(ep)
	defer srv.Close()
	err := newNotifier(t, srv.URL, nil).Send(context.Background(), Notification{Event: EventRotationFailed})
	if !errors.Is(err, ErrRejected) || ep.hits.Load() != 1 {
		t.Fatalf("err %v after %d hits", err, ep.hits.Load())
	}
}

func TestTimeoutIsRetriedAndBounded(t *testing.T) {
	var hits atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.ReadAll(r.Body) // after the body, the server notices the client hanging up
		select {
		case <-r.Context().Done():
		case <-release: // never outlive the test, even if the hang-up goes unnoticed
		}
	}))
	defer srv.Close()
	defer close(release)
	sent := make(chan error, 1)
	go func() {
		sent <- newNotifier(t, srv.URL, func(c *Config) { c.Timeout = 50 * time.Millisecond; c.Attempts = 2 }).Send(context.Background(), Notification{})
	}()
	select {
	case err := <-sent:
		if !errors.Is(err, context.DeadlineExceeded) || hits.Load() != 2 {
			t.Fatalf("err %v after %d hits, want a timeout after 2", err, hits.Load())
		}
	case <-time.After(liveness):
		t.Fatal("Send still waits on an endpoint that never answers: the per-attempt timeout is not applied")
	}
}

func TestQueueAndRun(t *testing.T) {
	ep := &endpoint{}
	srv := httptest.NewServer(ep)
	defer srv.Close()
	n := newNotifier(t, srv.URL, func(c *Config) { c.QueueSize = 1 })
	if !n.Enqueue(Notification{Service: "a"}) || n.Enqueue(Notification{Service: "b"}) {
		t.Fatal("queue of one accepted two, or none")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- n.Run(ctx) }()
	eventually(t, "the queued notification to be sent", func() bool { return ep.hits.Load() > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after cancel", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{{URL: "ftp://x", Secret: secret}, {URL: "not a url", Secret: secret}, {URL: "https://hooks.example/x"}} {
		if _, err := New(c); err == nil {
			t.Errorf("accepted %+v", c.URL)
		}
	}
}

// TestSetFromConfig: each dso.yaml endpoint gets only the events it asked
// for, signed with its own key.
func TestSetFromConfig(t *testing.T) {
	all, failures := &endpoint{}, &endpoint{}
	srvAll, srvFail := httptest.NewServer(all), httptest.NewServer(failures)
	defer srvAll.Close()
	defer srvFail.Close()
	set, err := FromConfig([]config.Notify{
		{URL: srvAll.URL, Secret: string(secret), Events: []config.NotifyEvent{config.NotifySuccess, config.NotifyFailure}},
		{URL: srvFail.URL, Secret: string(secret), Events: []config.NotifyEvent{config.NotifyFailure}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- set.Run(ctx) }()
	set.Enqueue(Notification{Event: EventRotationSucceeded, Service: "ok"})
	set.Enqueue(Notification{Event: EventRotationFailed, Service: "bad"})
	// Each endpoint is sent to in order: once the failure reached the
	// endpoint for failures only, the success was already dealt with.
	eventually(t, "both notifications at the endpoint for all events, the failure at the other", func() bool {
		return all.hits.Load() >= 2 && failures.hits.Load() >= 1
	})
	cancel()
	<-done
	if len(all.bodies) != 2 || len(failures.bodies) != 1 || failures.bodies[0].Event != EventRotationFailed {
		t.Fatalf("all got %+v, failures got %+v", all.bodies, failures.bodies)
	}
	if _, err := FromConfig([]config.Notify{{URL: "ftp://x", Secret: "k"}}, nil); err == nil || !strings.Contains(err.Error(), "agent.notify[0]") {
		t.Fatalf("bad URL: %v", err)
	}
}
