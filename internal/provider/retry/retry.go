// Package retry runs provider calls with a timeout on each attempt and
// retries the failures worth retrying (unreachable, throttled) with
// exponential backoff and jitter. It also classifies HTTP statuses and
// transport errors into the provider sentinel errors.
package retry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/dso-project/dso/internal/provider"
)

// Defaults used for zero fields of a Policy.
const (
	DefaultAttempts   = 3
	DefaultBackoff    = 500 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	DefaultTimeout    = 10 * time.Second
)

// Policy says how long one attempt may take and how often to try. The zero
// value uses the defaults above. It maps dso.yaml's retry block
// (attempts, backoff) and a provider's timeout.
type Policy struct {
	Attempts   int           // tries in all, first included
	Backoff    time.Duration // wait before the second try; doubled after each
	MaxBackoff time.Duration // cap on one wait
	Timeout    time.Duration // limit on one attempt

	// jitter picks the wait in [d/2, d); tests replace it.
	jitter func(d time.Duration) time.Duration
}

// Validate reports a policy that cannot be used, naming the field.
func (p Policy) Validate() error {
	switch {
	case p.Attempts < 0:
		return fmt.Errorf("retry attempts %d: must be at least 1", p.Attempts)
	case p.Backoff < 0:
		return fmt.Errorf("retry backoff %s: must not be negative", p.Backoff)
	case p.MaxBackoff < 0:
		return fmt.Errorf("retry max backoff %s: must not be negative", p.MaxBackoff)
	case p.Timeout < 0:
		return fmt.Errorf("timeout %s: must not be negative", p.Timeout)
	}
	return nil
}

// WithDefaults returns p with its zero fields set to the defaults.
func (p Policy) WithDefaults() Policy {
	if p.Attempts == 0 {
		p.Attempts = DefaultAttempts
	}
	if p.Backoff == 0 {
		p.Backoff = DefaultBackoff
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	if p.Timeout == 0 {
		p.Timeout = DefaultTimeout
	}
	if p.jitter == nil {
		p.jitter = equalJitter
	}
	return p
}

// equalJitter waits at least half of d, so that backoff still grows, and a
// random part of the rest, so that clients that failed together spread out.
func equalJitter(d time.Duration) time.Duration {
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half)
}

// Retryable reports whether a classified error may go away on its own.
func Retryable(err error) bool {
	return errors.Is(err, provider.ErrUnreachable) || errors.Is(err, provider.ErrThrottled)
}

type onceKey struct{}

// Once returns a context under which Do makes one attempt only: for a
// caller that retries on its own terms, such as the agent's delivery loop,
// which falls back to its last-known-good cache at the first failure
// instead of waiting out the provider's backoff.
func Once(ctx context.Context) context.Context { return context.WithValue(ctx, onceKey{}, true) }

// Do calls fn, giving each attempt a context that ends after p.Timeout,
// until fn succeeds, fails with an error that is not Retryable, the
// attempts are spent, or ctx ends. It returns fn's last error.
func (p Policy) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	p = p.WithDefaults()
	if ctx.Value(onceKey{}) != nil {
		p.Attempts = 1
	}
	wait := p.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, p.Timeout)
		err = fn(actx)
		cancel()
		if err == nil || !Retryable(err) || attempt >= p.Attempts || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(p.jitter(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(wait*2, p.MaxBackoff)
	}
}

// HTTPStatus classifies an HTTP status answered by a backend: 404 is not
// found, 401 and 403 denied, 429 throttled, 408 and 5xx unreachable. It
// returns nil for any other status, which the caller must treat itself.
func HTTPStatus(code int) error {
	switch {
	case code == http.StatusNotFound:
		return provider.ErrNotFound
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return provider.ErrDenied
	case code == http.StatusTooManyRequests:
		return provider.ErrThrottled
	case code == http.StatusRequestTimeout || code >= 500:
		return provider.ErrUnreachable
	}
	return nil
}

// Transport classifies an error that came before any answer from the
// backend: an attempt that ran out of time or a network failure is
// unreachable. It returns nil for other errors: a cancelled parent context
// (no fault of the backend) and a certificate that does not verify (a
// configuration problem that retrying will not fix).
func Transport(err error) error {
	var netErr net.Error
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.Is(err, context.Canceled),
		errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr):
		return nil
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr):
		return provider.ErrUnreachable
	}
	return nil
}

// ErrUnreadable is the detail of an answer that came but whose body could
// not be read: it quotes nothing of the body, which may hold a value.
var ErrUnreadable = errors.New("the answer could not be read")

// Unreadable reports an error of reading or decoding an answer's body: cut
// short, or not the JSON the API sends. Another attempt may read it, so it
// is classed unreachable (retried).
func Unreadable(err error) bool {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &syntax) || errors.As(err, &typ)
}

// TimeoutDetail rewrites an attempt's deadline error as a message naming the
// timeout, which says more to a user than "context deadline exceeded".
func TimeoutDetail(err error, timeout time.Duration) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within the %s timeout", timeout)
	}
	return err
}
