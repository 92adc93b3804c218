// Command app is the web app of the DSO quickstart (examples/quickstart). It
// shows that it received its secrets without ever showing them: GET /
// answers, for the DB_PASSWORD variable and the file named by API_KEY_FILE,
// whether each is there, its length and the first hex digits of its SHA-256,
// which anyone who knows the value can check and nobody can reverse.
//
// It listens on $QUICKSTART_ADDR (default :8080) and serves:
//
//	GET /         the report; status 503 when a secret is missing
//	GET /healthz  "ok"
//
// It never logs a value, and reads the file at each request, so a rotated
// file shows at once.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// prefixLen is how many hex digits of a SHA-256 the report shows.
const prefixLen = 8

func main() {
	addr := os.Getenv("QUICKSTART_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	srv := &http.Server{
		Addr:              addr,
		Handler:           newHandler(os.LookupEnv),
		ReadHeaderTimeout: 5 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	log.Printf("quickstart: listening on %s", addr)

	select {
	case err := <-served:
		log.Fatalf("quickstart: %v", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		log.Printf("quickstart: shutdown: %v", err)
	}
}

// newHandler serves the report for the environment seen through lookup.
func newHandler(lookup func(string) (string, bool)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		text, ok := report(lookup)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, text)
	})
	return mux
}

// report describes the two secrets; ok is false when one is missing.
func report(lookup func(string) (string, bool)) (text string, ok bool) {
	var b strings.Builder
	ok = true
	b.WriteString("DSO quickstart\n")

	if v, set := lookup("DB_PASSWORD"); set && v != "" {
		fmt.Fprintf(&b, "DB_PASSWORD: set (%s)\n", describe([]byte(v)))
	} else {
		b.WriteString("DB_PASSWORD: not set\n")
		ok = false
	}

	path, set := lookup("API_KEY_FILE")
	switch data, err := os.ReadFile(path); {
	case !set || path == "":
		b.WriteString("API key file: API_KEY_FILE is not set\n")
		ok = false
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(&b, "API key file: %s is missing\n", path)
		ok = false
	case err != nil:
		// The error names the path and the reason, never content.
		fmt.Fprintf(&b, "API key file: %v\n", err)
		ok = false
	default:
		fmt.Fprintf(&b, "API key file: %s (%s)\n", path, describe(data))
	}

	if ok {
		b.WriteString("Both secrets were received; their values are never shown.\n")
	}
	return b.String(), ok
}

// describe gives the length of a value and the start of its SHA-256.
func describe(v []byte) string {
	sum := sha256.Sum256(v)
	return fmt.Sprintf("%d bytes, sha256 prefix %s", len(v), hex.EncodeToString(sum[:])[:prefixLen])
}
