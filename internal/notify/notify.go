// Package notify sends outbound webhooks when a rotation succeeds or
// fails: a JSON body signed like the agent's inbound webhooks (package
// signature: an HMAC-SHA256 over a timestamp and the body, so a receiver
// can refuse replays), sent with a timeout and retried with backoff. Bodies carry names, versions and ids, never a
// secret value.
package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/dso-project/dso/internal/backoff"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/signature"
)

// Headers set on every notification.
const (
	EventHeader    = "X-DSO-Event"
	DeliveryHeader = "X-DSO-Delivery" // unique per notification, the same on retries
)

// Event names.
const (
	EventRotationSucceeded = "rotation.succeeded"
	EventRotationFailed    = "rotation.failed"
)

// Notification is the JSON body of one webhook.
type Notification struct {
	Event        string    `json:"event"`
	Time         time.Time `json:"time"`
	RotationID   uint64    `json:"rotation_id,omitempty"`
	Project      string    `json:"project,omitempty"`
	Service      string    `json:"service"`
	Secrets      []string  `json:"secrets,omitempty"`
	Strategy     string    `json:"strategy"`
	OldContainer string    `json:"old_container,omitempty"`
	NewContainer string    `json:"new_container,omitempty"`
	Error        string    `json:"error,omitempty"`
}

// Config sets up a Notifier for one endpoint. Zero fields take the
// defaults shown.
type Config struct {
	URL       string        // required, http or https
	Secret    []byte        // HMAC key; required
	Timeout   time.Duration // per attempt: 10s
	Attempts  int           // in all: 5
	Backoff   time.Duration // before the second attempt, doubling, up to a minute: 1s
	QueueSize int           // notifications waiting to be sent: 100
	// Events this endpoint wants (EventRotationSucceeded,
	// EventRotationFailed); every event when empty.
	Events []string
	Client *http.Client
	Log    *slog.Logger
}

// Notifier delivers notifications to one endpoint.
type Notifier struct {
	cfg   Config
	queue chan Notification
}

// New checks cfg and returns a Notifier.
func New(cfg Config) (*Notifier, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("notification URL %q: want an http or https URL", cfg.URL)
	}
	if len(cfg.Secret) == 0 {
		return nil, fmt.Errorf("notification URL %s: a signing secret is required", u.Redacted())
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 5
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 100
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{cfg: cfg, queue: make(chan Notification, cfg.QueueSize)}, nil
}

// ErrRejected means the endpoint refused the notification for good (a 4xx
// other than 408 and 429); it is not retried.
var ErrRejected = errors.New("notification rejected")

// Send delivers n, retrying failures (network errors, timeouts, 408, 429,
// 5xx) with backoff until the attempts are spent or ctx ends.
func (nf *Notifier) Send(ctx context.Context, n Notification) error {
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	id := make([]byte, 16)
	rand.Read(id)
	delivery := hex.EncodeToString(id)
	b := backoff.New(nil, nf.cfg.Backoff, time.Minute)
	var last error
	for attempt := 1; ; attempt++ {
		retry, err := nf.attempt(ctx, n.Event, delivery, body)
		if err == nil {
			return nil
		}
		last = err
		if !retry || attempt >= nf.cfg.Attempts {
			break
		}
		if err := b.Wait(ctx); err != nil {
			return fmt.Errorf("notification to %s: %w (last error: %v)", nf.where(), err, last)
		}
	}
	return fmt.Errorf("notification to %s failed: %w", nf.where(), last)
}

func (nf *Notifier) where() string {
	u, _ := url.Parse(nf.cfg.URL)
	return u.Redacted()
}

func (nf *Notifier) attempt(ctx context.Context, event, delivery string, body []byte) (retry bool, err error) {
	actx, cancel := context.WithTimeout(ctx, nf.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, nf.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	ts, sig := signature.Sign(nf.cfg.Secret, time.Now(), body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dso-agent")
	req.Header.Set(signature.TimestampHeader, ts)
	req.Header.Set(signature.Header, sig)
	req.Header.Set(EventHeader, event)
	req.Header.Set(DeliveryHeader, delivery)
	resp, err := nf.cfg.Client.Do(req)
	if err != nil {
		return ctx.Err() == nil, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return true, fmt.Errorf("endpoint answered %s", resp.Status)
	default:
		return false, fmt.Errorf("%w: endpoint answered %s", ErrRejected, resp.Status)
	}
}

// Wants reports whether the endpoint takes notifications of event.
func (nf *Notifier) Wants(event string) bool {
	return len(nf.cfg.Events) == 0 || slices.Contains(nf.cfg.Events, event)
}

// Enqueue hands n to Run without waiting. It returns false (and the
// notification is dropped) when the queue is full.
func (nf *Notifier) Enqueue(n Notification) bool {
	select {
	case nf.queue <- n:
		return true
	default:
		nf.cfg.Log.Warn("notification queue full; dropped", "event", n.Event, "service", n.Service)
		return false
	}
}

// Run sends queued notifications one at a time until ctx is cancelled. A
// cancel is not an error.
func (nf *Notifier) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-nf.queue:
			if err := nf.Send(ctx, n); err != nil && ctx.Err() == nil {
				nf.cfg.Log.Error("notification not delivered", "event", n.Event, "service", n.Service, "err", err)
			}
		}
	}
}

// Set is the endpoints of one agent.
type Set []*Notifier

// FromConfig builds a notifier per agent.notify entry of dso.yaml.
func FromConfig(entries []config.Notify, log *slog.Logger) (Set, error) {
	var s Set
	for i, e := range entries {
		var events []string
		for _, ev := range e.Events {
			switch ev {
			case config.NotifySuccess:
				events = append(events, EventRotationSucceeded)
			case config.NotifyFailure:
				events = append(events, EventRotationFailed)
			}
		}
		nf, err := New(Config{URL: e.URL, Secret: []byte(e.Secret), Events: events, Log: log})
		if err != nil {
			return nil, fmt.Errorf("agent.notify[%d]: %w", i, err)
		}
		s = append(s, nf)
	}
	return s, nil
}

// Enqueue hands n to every endpoint that wants its event, without waiting.
func (s Set) Enqueue(n Notification) {
	for _, nf := range s {
		if nf.Wants(n.Event) {
			nf.Enqueue(n)
		}
	}
}

// Run sends the queued notifications of every endpoint until ctx is
// cancelled; one slow endpoint does not hold the others back.
func (s Set) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, nf := range s {
		wg.Go(func() { nf.Run(ctx) })
	}
	wg.Wait()
	return nil
}
