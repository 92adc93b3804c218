package testbed

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// HTTPTimeout is how long HTTPGet keeps trying to get an answer.
const HTTPTimeout = 30 * time.Second

// HTTPGet sends GET url and returns the status and body of the first answer,
// whatever its status. Until HTTPTimeout has passed it retries on errors
// (connection refused or reset while a container starts); then it fails the
// test. It is meant for ports published on 127.0.0.1.
func HTTPGet(t testing.TB, url string) (status int, body string) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(HTTPTimeout)
	for {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		if err != nil {
			t.Fatalf("testbed: GET %s: %v", url, err)
		}
		resp, err := hc.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if rerr == nil {
				return resp.StatusCode, string(b)
			}
			err = rerr
		}
		if time.Now().After(deadline) || t.Context().Err() != nil {
			t.Fatalf("testbed: GET %s: no answer within %v: %v", url, HTTPTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
