package providertest

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Proxy is a reverse proxy in front of a test server. It counts requests by
// a key the test chooses (the API operation), can hold every answer for a
// while (a slow server), and can answer some requests itself (an access
// policy the server lacks).
type Proxy struct {
	URL string

	key func(*http.Request) string

	mu     sync.Mutex
	counts map[string]int
	delay  time.Duration
	answer func(w http.ResponseWriter, r *http.Request) bool
}

// NewProxy starts a proxy to target, closed when the test ends. key names
// the operation of a request for Count; nil counts by method and path.
func NewProxy(t testing.TB, target string, key func(*http.Request) string) *Proxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("proxy target %q: %v", target, err)
	}
	if key == nil {
		key = func(r *http.Request) string { return r.Method + " " + r.URL.Path }
	}
	p := &Proxy{key: key, counts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // cancelled requests are expected
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.counts[p.key(r)]++
		delay, answer := p.delay, p.answer
		p.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if answer != nil && answer(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// SetDelay makes the proxy hold each request for d before answering.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// SetAnswer lets f answer a request itself by returning true.
func (p *Proxy) SetAnswer(f func(w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answer = f
}

// Counts returns the requests seen per key since the last Reset.
func (p *Proxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// Reset sets the counts to zero.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
}

// DeadAddr returns a loopback host:port where nothing listens.
func DeadAddr(t testing.TB) string {
	addr := freeAddr()
	if addr == "" {
		t.Fatal("no free loopback port")
	}
	return addr
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer l.Close()
	return l.Addr().String()
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
