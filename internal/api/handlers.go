package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/dso-project/dso/internal/api/events"
)

// errorBody is every error response: a message for people.
type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

func healthHandler(src HealthSource) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := src(r.Context())
		code := http.StatusOK
		if h.Health != HealthOK {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, h)
	}
}

// maxHistory bounds ?history= on the events endpoint.
const maxHistory = 10000

// eventsHandler streams events as server-sent events: first up to
// ?history=N past events, then, unless ?follow=0, the live ones until the
// client goes or the server stops (stop is done).
func eventsHandler(bus *events.Bus, stop <-chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		history := 0
		if v := q.Get("history"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > maxHistory {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("history=%q: want a number from 0 to %d", v, maxHistory))
				return
			}
			history = n
		}
		follow := true
		if v := q.Get("follow"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("follow=%q: want true or false", v))
				return
			}
			follow = b
		}
		flusher, ok := w.(http.Flusher)
		if !ok {
			writeError(w, http.StatusInternalServerError, "streaming is not supported by this connection")
			return
		}
		past, sub := bus.Subscribe(history, 256)
		defer sub.Close()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		for _, e := range past {
			if writeEvent(w, e) != nil {
				return
			}
		}
		flusher.Flush()
		if !follow {
			return
		}
		heartbeat := time.NewTicker(15 * time.Second)
		defer heartbeat.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-stop:
				return
			case <-heartbeat.C:
				if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
					return
				}
			case e := <-sub.C():
				if writeEvent(w, e) != nil {
					return
				}
			}
			flusher.Flush()
		}
	}
}

func writeEvent(w io.Writer, e events.Event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, data)
	return err
}

// checkRequest is the body of a webhook or a local check request.
type checkRequest struct {
	Secrets []string `json:"secrets"`
}

// maxBody bounds request bodies.
const maxBody = 64 << 10

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is over %d bytes", maxBody))
		} else {
			writeError(w, http.StatusBadRequest, "reading the request body failed")
		}
		return nil, false
	}
	return body, true
}

// runCheck decodes body (empty means every secret) and calls trigger.
func runCheck(w http.ResponseWriter, body []byte, trigger Trigger) {
	var req checkRequest
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, `the body must be JSON like {"secrets":["name"]}, or empty for every secret`)
			return
		}
	}
	if err := trigger(req.Secrets); err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"triggered": req.Secrets})
}

// serveUntil serves srv on its listener until ctx is done, then stops it
// gracefully within grace; stop is closed first so that event streams end.
func serveUntil(ctx context.Context, srv *http.Server, serve func() error, stop chan struct{}, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		close(stop)
		return err
	case <-ctx.Done():
	}
	close(stop)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}
