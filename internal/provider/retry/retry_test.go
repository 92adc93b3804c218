package retry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/provider"
)

func TestDoRetriesOnlyRetryable(t *testing.T) {
	var waits []time.Duration
	p := Policy{Attempts: 5, Backoff: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Timeout: time.Second,
		jitter: func(d time.Duration) time.Duration { waits = append(waits, d); return time.Millisecond }}
	for _, tc := range []struct {
		err   error
		calls int
	}{
		{provider.ErrUnreachable, 5},
		{provider.ErrThrottled, 5},
		{provider.ErrNotFound, 1},
		{provider.ErrDenied, 1},
		{errors.New("unclassified"), 1},
	} {
		waits = nil
		calls := 0
		err := p.Do(context.Background(), func(ctx context.Context) error {
			calls++
			return fmt.Errorf("wrapped: %w", tc.err)
		})
		if !errors.Is(err, tc.err) || calls != tc.calls {
			t.Errorf("%v: %d calls, err %v; want %d calls", tc.err, calls, err, tc.calls)
		}
		want := "[]"
		if tc.calls == 5 {
			want = "[100ms 200ms 300ms 300ms]" // doubling, capped
		}
		if fmt.Sprint(waits) != want {
			t.Errorf("%v: backoff before jitter = %v, want %v", tc.err, waits, want)
		}
	}
}

func TestOnceMakesOneAttempt(t *testing.T) {
	calls := 0
	err := Policy{Attempts: 5}.Do(Once(context.Background()), func(ctx context.Context) error {
		calls++
		return provider.ErrUnreachable
	})
	if calls != 1 || !errors.Is(err, provider.ErrUnreachable) {
		t.Fatalf("%d calls, err %v; want 1 call and its error", calls, err)
	}
}

func TestDoStopsOnSuccessAndCancel(t *testing.T) {
	calls := 0
	err := Policy{Attempts: 3, Backoff: time.Millisecond}.Do(context.Background(), func(ctx context.Context) error {
		calls++
		if calls < 2 {
			return provider.ErrUnreachable
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Errorf("success on the 2nd try: %d calls, %v", calls, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = Policy{Attempts: 10, Backoff: time.Hour}.Do(ctx, func(ctx context.Context) error {
		calls++
		cancel()
		return provider.ErrUnreachable
	})
	if calls != 1 || !errors.Is(err, provider.ErrUnreachable) {
		t.Errorf("cancelled during backoff: %d calls, %v", calls, err)
	}
}

func TestDoBoundsEachAttempt(t *testing.T) {
	var deadlines []time.Duration
	Policy{Attempts: 2, Backoff: time.Millisecond, Timeout: 50 * time.Millisecond}.Do(context.Background(), func(ctx context.Context) error {
		d, ok := ctx.Deadline()
		if !ok {
			t.Fatal("attempt without a deadline")
		}
		deadlines = append(deadlines, time.Until(d))
		<-ctx.Done()
		return Transport(ctx.Err())
	})
	if len(deadlines) != 2 || deadlines[0] > 50*time.Millisecond || deadlines[1] > 50*time.Millisecond {
		t.Errorf("attempt deadlines %v, want 2 of at most 50ms", deadlines)
	}
}

func TestEqualJitter(t *testing.T) {
	for range 1000 {
		if d := equalJitter(time.Second); d < 500*time.Millisecond || d >= time.Second {
			t.Fatalf("jitter(1s) = %v, want [500ms, 1s)", d)
		}
	}
}

func TestHTTPStatus(t *testing.T) {
	for code, want := range map[int]error{
		200: nil, 400: nil, 401: provider.ErrDenied, 403: provider.ErrDenied, 404: provider.ErrNotFound,
		408: provider.ErrUnreachable, 429: provider.ErrThrottled, 500: provider.ErrUnreachable, 503: provider.ErrUnreachable,
	} {
		if got := HTTPStatus(code); got != want {
			t.Errorf("HTTPStatus(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestTransport(t *testing.T) {
	_, dialErr := net.Dial("tcp", "127.0.0.1:1")
	_, getErr := http.Get("http://127.0.0.1:1/")
	for name, tc := range map[string]struct {
		err  error
		want error
	}{
		"dial":      {dialErr, provider.ErrUnreachable},
		"http get":  {getErr, provider.ErrUnreachable},
		"deadline":  {fmt.Errorf("x: %w", context.DeadlineExceeded), provider.ErrUnreachable},
		"cancelled": {context.Canceled, nil},
		"bad cert":  {fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), nil},
		"other":     {errors.New("boom"), nil},
	} {
		if got := Transport(tc.err); got != tc.want {
			t.Errorf("%s: Transport(%v) = %v, want %v", name, tc.err, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := (Policy{}).Validate(); err != nil {
		t.Errorf("zero policy: %v", err)
	}
	for _, p := range []Policy{{Attempts: -1}, {Backoff: -1}, {MaxBackoff: -1}, {Timeout: -1}} {
		if p.Validate() == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}
