// Command testapp is a tiny static HTTP server that runs inside test
// containers and reports what the container gave it: environment, files,
// ownership, arguments and signals. Tests ask it over a published port
// instead of exec'ing into the container.
//
// It listens on $TESTAPP_ADDR (default :8080) and serves:
//
//	GET /env/NAME       value of NAME as seen at process start (404 if unset)
//	GET /file?path=P    content of P read now (404 if missing)
//	GET /stat?path=P    "uid gid mode" of P, mode in octal (404 if missing)
//	GET /id             "uid gid" of the process
//	GET /peer           the address the connection came from (a proxy's)
//	GET /args           os.Args as JSON
//	GET /hup            number of SIGHUPs received so far
//	GET /exit?code=N    answers, then exits with status N
//	GET /hijack?socket=P&reply=TEXT
//	                    plays a hostile workload: replaces the unix socket P
//	                    (the init's) with its own listener, which answers each
//	                    connection with "error: TEXT <base64 of what it read>"
//	GET /healthz        "ok"
//	GET /bytes?n=N      N zero bytes (benchmarks: bulk transfer)
//
// `testapp check PATH WANT` is a healthcheck: it asks the running testapp
// for PATH and exits 0 when the answer is WANT, 1 otherwise.
//
// It never logs the values it serves.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "check" {
		os.Exit(check(os.Args[2], os.Args[3]))
	}
	addr := os.Getenv("TESTAPP_ADDR")
	if addr == "" {
		addr = ":8080"
	}

	var hups atomic.Int64
	hupc := make(chan os.Signal, 1)
	signal.Notify(hupc, syscall.SIGHUP)
	go func() {
		for range hupc {
			hups.Add(1)
		}
	}()
	// As PID 1 in a container the process gets no default action for
	// SIGTERM, so handle it or `docker stop` waits for its timeout.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	exitCode := make(chan int, 1)
	srv := &http.Server{
		Addr:              addr,
		Handler:           newHandler(startEnv(), &hups, exitCode),
		ReadHeaderTimeout: 5 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()

	code := 0
	select {
	case err := <-served:
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	case <-stop:
	case code = <-exitCode:
	}
	// Let a response that asked for the exit reach the client first.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = srv.Shutdown(ctx)
	cancel()
	os.Exit(code)
}

// startEnv snapshots the environment once, so /env reports what the process
// was started with even if something changes it later.
func startEnv() map[string]string {
	env := make(map[string]string)
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

func newHandler(env map[string]string, hups *atomic.Int64, exitCode chan<- int) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "n must be a byte count", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		zeros := make([]byte, 1<<20)
		for n > 0 {
			k, err := w.Write(zeros[:min(n, int64(len(zeros)))])
			if err != nil {
				return
			}
			n -= int64(k)
		}
	})
	mux.HandleFunc("GET /env/{name}", func(w http.ResponseWriter, r *http.Request) {
		v, ok := env[r.PathValue("name")]
		if !ok {
			http.Error(w, "unset", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, v)
	})
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			fileError(w, err)
			return
		}
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /stat", func(w http.ResponseWriter, r *http.Request) {
		fi, err := os.Stat(r.URL.Query().Get("path"))
		if err != nil {
			fileError(w, err)
			return
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			http.Error(w, "no stat_t", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%d %d %o", st.Uid, st.Gid, fi.Mode().Perm())
	})
	mux.HandleFunc("GET /peer", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprint(w, host)
	})
	mux.HandleFunc("GET /id", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%d %d", os.Getuid(), os.Getgid())
	})
	mux.HandleFunc("GET /args", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(os.Args)
	})
	mux.HandleFunc("GET /hup", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, hups.Load())
	})
	mux.HandleFunc("GET /exit", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.URL.Query().Get("code"))
		if err != nil || code < 0 || code > 255 {
			http.Error(w, "code must be 0..255", http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "exiting %d", code)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		select {
		case exitCode <- code:
		default: // already exiting
		}
	})
	mux.HandleFunc("GET /hijack", func(w http.ResponseWriter, r *http.Request) {
		path, reply := r.URL.Query().Get("socket"), r.URL.Query().Get("reply")
		os.Remove(path)
		ln, err := net.Listen("unix", path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				got, _ := io.ReadAll(c)
				fmt.Fprintf(c, "error: %s %s\n", reply, base64.StdEncoding.EncodeToString(got))
				c.Close()
			}
		}()
		fmt.Fprint(w, "listening")
	})
	return mux
}

func fileError(w http.ResponseWriter, err error) {
	if errors.Is(err, fs.ErrNotExist) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	// The error names only the path and the reason, never file content.
	http.Error(w, err.Error(), http.StatusInternalServerError)
}

// check asks the testapp of this container for path and compares.
func check(path, want string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://127.0.0.1:8080" + path)
	if err != nil {
		return 1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(b) != want {
		return 1
	}
	return 0
}
