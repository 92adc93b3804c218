package awssm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/awssm"
	"github.com/dso-project/dso/internal/provider/awssm/awssmtest"
	"github.com/dso-project/dso/internal/provider/providertest"
	"github.com/dso-project/dso/internal/provider/retry"
)

func start(t testing.TB, batch bool) *awssmtest.Env { return awssmtest.Start(t, batch) }

func newProvider(t testing.TB, endpoint string, pol retry.Policy) *awssm.Provider {
	t.Helper()
	p, err := awssm.New(awssm.Options{Region: awssmtest.Region, Endpoint: endpoint, Credentials: awssmtest.Credentials, Retry: pol})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	e := start(t, false)
	fast := retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond}
	providertest.Run(t, providertest.Fixture{
		Provider: newProvider(t, e.Proxy.URL, fast),
		Put: func(t *testing.T, name string, value []byte) (string, string) {
			e.Put(t, "app/"+name, value)
			return "app/" + name, ""
		},
		PutJSON: func(t *testing.T, name string, obj map[string]any) string {
			b, _ := json.Marshal(obj)
			e.Put(t, "app/"+name, b)
			return "app/" + name
		},
		Path: func(name string) string { return "app/" + name },
		Denied: func(t *testing.T, value []byte) string {
			e.Put(t, "denied/x", value)
			return "denied/x"
		},
		Unreachable: func(t *testing.T, timeout time.Duration) provider.Provider {
			return newProvider(t, "http://"+providertest.DeadAddr(t), retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond, Timeout: timeout})
		},
		Slow: func(t *testing.T, timeout time.Duration) provider.Provider {
			slow := providertest.NewProxy(t, e.KumoURL, nil)
			slow.SetDelay(5 * timeout)
			return newProvider(t, slow.URL, retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond, Timeout: timeout})
		},
		Binary:   true,
		MaxValue: 64 * 1024,
	})
}

// Stages and version ids select versions; Version follows AWSCURRENT.
func TestStagesAndVersionIDs(t *testing.T) {
	e := start(t, false)
	p := newProvider(t, e.Proxy.URL, retry.Policy{})
	ctx := context.Background()
	v1 := e.Put(t, "app/staged", []byte("one"))
	v2 := e.Put(t, "app/staged", []byte("two"))
	for path, want := range map[string]string{
		"app/staged":                    "two",
		"app/staged::stage=AWSCURRENT":  "two",
		"app/staged::stage=AWSPREVIOUS": "one",
		"app/staged::version=" + v1:     "one",
	} {
		s, err := p.Get(ctx, path)
		if err != nil || string(s.Value) != want {
			t.Errorf("Get(%q) = %q, %v; want %q", path, s.Value, err, want)
		}
	}
	for path, want := range map[string]string{"app/staged": v2, "app/staged::stage=AWSPREVIOUS": v1, "app/staged::version=" + v1: v1} {
		if v, err := p.Version(ctx, path); err != nil || v != want {
			t.Errorf("Version(%q) = %q, %v; want %q", path, v, err, want)
		}
	}
	if _, err := p.Version(ctx, "app/staged::stage=NOPE"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("unknown stage: %v, want not found", err)
	}
	if _, err := p.Get(ctx, "app/staged::color=blue"); err == nil || !strings.Contains(err.Error(), "::stage=LABEL") {
		t.Errorf("bad selector: %v", err)
	}
}

// kumo lacks BatchGetSecretValue: GetMany falls back to one call per
// secret, and stops trying the batch call after the first refusal.
func TestGetManyFallsBack(t *testing.T) {
	e := start(t, false)
	p := newProvider(t, e.Proxy.URL, retry.Policy{})
	var paths []string
	for i := range 45 {
		paths = append(paths, fmt.Sprintf("app/b%d", i))
		e.Put(t, paths[i], []byte(fmt.Sprint("value-", i)))
	}
	paths = append(paths, "app/missing")
	e.Proxy.Reset()
	res := p.GetMany(context.Background(), paths)
	for i, r := range res[:45] {
		if r.Err != nil || string(r.Secret.Value) != fmt.Sprint("value-", i) {
			t.Errorf("%s: %q, %v", paths[i], r.Secret.Value, r.Err)
		}
	}
	if !errors.Is(res[45].Err, provider.ErrNotFound) {
		t.Errorf("missing: %v", res[45].Err)
	}
	c := e.Proxy.Counts()
	if c["BatchGetSecretValue"] != 1 || c["GetSecretValue"] != 46 {
		t.Errorf("calls %v: want 1 refused batch call then 46 single gets", c)
	}
}

// TestUnreadableAnswerIsRetried: a 200 whose body cannot be read (cut
// short) is retried, and its error quotes nothing of it.
func TestUnreadableAnswerIsRetried(t *testing.T) {
	e := start(t, false)
	e.Put(t, "app/cut", []byte("whole"))
	var cuts atomic.Int32
	px := providertest.NewProxy(t, e.Proxy.URL, awssmtest.Operation)
	px.SetAnswer(func(w http.ResponseWriter, r *http.Request) bool {
		if cuts.Add(-1) < 0 {
			return false
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		io.WriteString(w, `{"Name":"app/cut","SecretString":"`+providertest.Canary)
		return true
	})
	p := newProvider(t, px.URL, retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond})
	cuts.Store(1)
	if s, err := p.Get(context.Background(), "app/cut"); err != nil || string(s.Value) != "whole" {
		t.Errorf("after one answer cut short: %q, %v; want the value from the second attempt", s.Value, err)
	}
	cuts.Store(100)
	_, err := p.Get(context.Background(), "app/cut")
	if !errors.Is(err, provider.ErrUnreachable) || strings.Contains(err.Error(), providertest.Canary) || !strings.Contains(err.Error(), "could not be read") {
		t.Errorf("every answer cut short: %v; want unreachable, saying the answer could not be read, quoting none of it", err)
	}
}

// Against a service with BatchGetSecretValue (the proxy answers it from
// kumo's data, as AWS would), GetMany makes one call per 20 secrets.
func TestGetManyBatches(t *testing.T) {
	e := start(t, true)
	p := newProvider(t, e.Proxy.URL, retry.Policy{})
	var paths []string
	for i := range 45 {
		paths = append(paths, fmt.Sprintf("app/b%d", i))
		e.Put(t, paths[i], []byte(fmt.Sprint("value-", i)))
	}
	paths = append(paths, "app/missing", "app/b1::stage=AWSCURRENT")
	e.Proxy.Reset()
	res := p.GetMany(context.Background(), paths)
	for i, r := range res[:45] {
		if r.Err != nil || string(r.Secret.Value) != fmt.Sprint("value-", i) || r.Secret.Version == "" {
			t.Errorf("%s: %q %q, %v", paths[i], r.Secret.Value, r.Secret.Version, r.Err)
		}
	}
	if !errors.Is(res[45].Err, provider.ErrNotFound) || string(res[46].Secret.Value) != "value-1" {
		t.Errorf("missing: %v; with a stage: %q, %v", res[45].Err, res[46].Secret.Value, res[46].Err)
	}
	c := e.Proxy.Counts()
	if c["BatchGetSecretValue"] != 3 || c["GetSecretValue"] != 1 {
		t.Errorf("calls %v: want 3 batch calls (46 ids) and 1 single get (the staged path)", c)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	if _, err := awssm.New(awssm.Options{Credentials: awssmtest.Credentials}); err == nil || !strings.Contains(err.Error(), "no region") {
		t.Errorf("no region: %v", err)
	}
	if _, err := awssm.New(awssm.Options{Region: "us-east-1", Retry: retry.Policy{Timeout: -1}}); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("bad retry: %v", err)
	}
}
