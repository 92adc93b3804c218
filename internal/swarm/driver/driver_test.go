package driver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/swarm/driver"
)

const canary = "canary-7c1e0b9f-swarm-driver-value"

type fixture struct {
	client *http.Client
	log    *bytes.Buffer // read it after stop: the server's goroutines write it
	m      *metrics.Metrics
	path   string
	stop   func() error
}

// start runs a driver on a unix socket in a temporary directory, with a
// resolver that knows dso://app/canary and fails every other reference
// naming it.
func start(t *testing.T) *fixture {
	t.Helper()
	resolve := func(_ context.Context, ref secretref.Ref) ([]byte, error) {
		if ref.String() == "dso://app/canary" {
			return []byte(canary), nil
		}
		return nil, fmt.Errorf("%s: provider %q: secret %q: not found", ref, "local", ref.Path)
	}
	f := &fixture{log: &bytes.Buffer{}, m: metrics.New(), path: filepath.Join(t.TempDir(), "plugins", "dso.sock")}
	d := driver.New(resolve, slog.New(slog.NewTextHandler(f.log, nil)), f.m)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx, f.path) }()
	var once sync.Once
	var runErr error
	f.stop = func() error {
		once.Do(func() { cancel(); runErr = <-errc })
		return runErr
	}
	t.Cleanup(func() { _ = f.stop() })
	f.client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", f.path)
	}}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(f.path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket at %s after 5s", f.path)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return f
}

func (f *fixture) post(t *testing.T, path string, body any) (int, http.Header, []byte) {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := f.client.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, out
}

func labels(ref string) map[string]string {
	return map[string]string{driver.LabelRef: ref, driver.LabelVersion: "3", driver.LabelStack: "app"}
}

func request(secretLabels map[string]string, stack string) driver.Request {
	return driver.Request{
		SecretName: "app_canary_v3", SecretLabels: secretLabels,
		ServiceID: "svc1", ServiceName: "app_web", ServiceLabels: map[string]string{"com.docker.stack.namespace": stack},
		TaskID: "task1", TaskName: "app_web.1.task1", TaskImage: "testapp", NodeID: "node1",
	}
}

func TestActivate(t *testing.T) {
	f := start(t)
	status, h, body := f.post(t, "/Plugin.Activate", "")
	var got struct{ Implements []string }
	if err := json.Unmarshal(body, &got); err != nil || status != 200 || len(got.Implements) != 1 || got.Implements[0] != "secretprovider" {
		t.Fatalf("Activate = %d %s (%v), want 200 {\"Implements\":[\"secretprovider\"]}", status, body, err)
	}
	if ct := h.Get("Content-Type"); ct != "application/vnd.docker.plugins.v1.2+json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if status, _, _ := f.post(t, "/VolumeDriver.Create", "{}"); status != http.StatusNotFound {
		t.Errorf("POST /VolumeDriver.Create = %d, want 404", status)
	}
}

func TestGetSecret(t *testing.T) {
	f := start(t)
	status, _, body := f.post(t, "/SecretProvider.GetSecret", request(labels("dso://app/canary"), "app"))
	var got driver.Response
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("GetSecret answer %d is not JSON: %v", status, err)
	}
	if status != 200 || string(got.Value) != canary || got.Err != "" || got.DoNotReuse {
		t.Fatalf("GetSecret = %d value %d bytes (want the canary), Err %q, DoNotReuse %v", status, len(got.Value), got.Err, got.DoNotReuse)
	}
	// The value travels base64-encoded and DoNotReuse is said.
	var raw map[string]any
	_ = json.Unmarshal(body, &raw)
	if _, ok := raw["DoNotReuse"]; !ok || strings.Contains(string(body), canary) {
		t.Errorf("body %d bytes: want base64 Value and an explicit DoNotReuse", len(body))
	}
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	log := f.log.String()
	for _, want := range []string{"app_canary_v3", "app_web.1.task1", "dso://app/canary", "node1"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, canary) {
		t.Error("the log holds the value")
	}
	if n := testutil.ToFloat64(f.m.SwarmSecrets.WithLabelValues(metrics.ResultSuccess)); n != 1 {
		t.Errorf("dso_swarm_secret_requests_total{result=success} = %v, want 1", n)
	}
}

func TestGetSecretRefused(t *testing.T) {
	noStack := labels("dso://app/canary")
	delete(noStack, driver.LabelStack)
	noVersion := labels("dso://app/canary")
	delete(noVersion, driver.LabelVersion)
	for _, tc := range []struct {
		name  string
		req   driver.Request
		wants []string // in the Err
	}{
		{"no labels", request(nil, "app"), []string{"app_canary_v3", "no dso.ref label"}},
		{"no stack label", request(noStack, "app"), []string{"no dso.stack label"}},
		{"no version label", request(noVersion, "app"), []string{"no dso.version label"}},
		{"unparsable ref", request(labels("vault://app/canary"), "app"), []string{"label dso.ref", "unknown scheme"}},
		{"file ref", request(labels("dsofile://app/canary"), "app"), []string{"want a dso:// reference"}},
		{"file mode", request(labels("dsofile://app/canary?mode=0400"), "app"), []string{"want a dso:// reference"}},
		{"path outside a project", request(labels("dso://canary"), "app"), []string{"not inside a project"}},
		{"not canonical", request(labels("dso://app/canary?provider=local&provider=x"), "app"), []string{"label dso.ref"}},
		{"other stack", request(labels("dso://app/canary"), "shop"), []string{`stack "app"`, `service "app_web"`, `"shop"`}},
		{"no stack on the service", request(labels("dso://app/canary"), ""), []string{`stack "app"`}},
		{"provider error", request(labels("dso://app/missing"), "app"), []string{"app_canary_v3", "app_web.1.task1", "dso://app/missing", "not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t)
			status, _, body := f.post(t, "/SecretProvider.GetSecret", tc.req)
			var got driver.Response
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("answer %d %q is not JSON: %v", status, body, err)
			}
			if status != http.StatusInternalServerError || len(got.Value) != 0 || got.Err == "" {
				t.Fatalf("GetSecret = %d, value %d bytes, Err %q; want 500, no value, an Err", status, len(got.Value), got.Err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(got.Err, w) {
					t.Errorf("Err %q lacks %q", got.Err, w)
				}
			}
			if err := f.stop(); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(got.Err+f.log.String(), canary) {
				t.Error("the value is in the error or the log")
			}
			if !strings.Contains(f.log.String(), "app_canary_v3") {
				t.Errorf("log does not name the secret:\n%s", f.log)
			}
			if n := testutil.ToFloat64(f.m.SwarmSecrets.WithLabelValues(metrics.ResultFailure)); n != 1 {
				t.Errorf("failures counted %v, want 1", n)
			}
		})
	}
}

func TestGetSecretBadBody(t *testing.T) {
	f := start(t)
	status, _, body := f.post(t, "/SecretProvider.GetSecret", "{not json")
	if status != http.StatusBadRequest || !strings.Contains(string(body), "unreadable request") {
		t.Errorf("GetSecret with a broken body = %d %s, want 400 naming it", status, body)
	}
}

func TestSocket(t *testing.T) {
	f := start(t)
	fi, err := os.Lstat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s: mode %v, want a socket with 0600", f.path, fi.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(f.path))
	if len(entries) != 1 {
		t.Errorf("%s holds %d entries, want the socket alone", filepath.Dir(f.path), len(entries))
	}
	if err := f.stop(); err != nil {
		t.Errorf("Run after its context ended: %v", err)
	}
	if _, err := os.Lstat(f.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after the driver stopped: %v", err)
	}
}

func TestSocketReplacesStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dso.sock")
	// A socket left by a driver that died: nothing listens on it.
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := driver.New(func(context.Context, secretref.Ref) ([]byte, error) { return nil, errors.New("none") }, nil, nil)
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx, path) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the driver does not listen at %s in place of a stale socket: %v", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

func TestSocketNotOverAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dso.sock")
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := driver.New(func(context.Context, secretref.Ref) ([]byte, error) { return nil, errors.New("none") }, nil, nil)
	err := d.Run(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Run over a regular file = %v, want an error saying it is not a socket", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "x" {
		t.Error("the file was changed")
	}
}
