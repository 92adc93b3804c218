// Package providertest is the conformance suite that every secret provider
// passes against a running server: the same cases (get, JSON key, missing,
// denied, version change, binary value, large value, unreachable server,
// slow server hitting the timeout) for Vault, AWS Secrets Manager, Azure
// Key Vault, external plugins and the local vault. It also holds the
// helpers the provider tests share: a counting, delaying reverse proxy to
// put in front of a test server, and an address where nothing listens.
package providertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/provider"
)

// Canary is part of every value the suite stores; errors must never hold it.
const Canary = "CANARY-7f3a9c"

// Fixture connects the suite to one provider and the server behind it.
type Fixture struct {
	// Provider is the provider under test, connected to the server.
	Provider provider.Provider
	// Put stores value under name (a new version if it exists) and returns
	// the path and the JSON key (empty for the whole value) that read it back.
	Put func(t *testing.T, name string, value []byte) (path, key string)
	// PutJSON stores a JSON object under name and returns its path.
	PutJSON func(t *testing.T, name string, obj map[string]any) string
	// Path returns the path of name, stored or not.
	Path func(name string) string
	// Denied stores value under a name the provider may not read and
	// returns its path.
	Denied func(t *testing.T, value []byte) string
	// Unreachable returns the provider configured for a server that does
	// not answer, with the given timeout per attempt.
	Unreachable func(t *testing.T, timeout time.Duration) provider.Provider
	// Slow returns the provider configured for a server that holds each
	// answer for longer than the given timeout per attempt.
	Slow func(t *testing.T, timeout time.Duration) provider.Provider
	// Binary is true when the backend stores any bytes; false when values
	// must be UTF-8 text (the binary case then checks NUL and control bytes).
	Binary bool
	// MaxValue is the largest value the real service accepts, when that is
	// under 1 MiB (AWS: 64 KiB, Azure: 25 KiB); 0 means 1 MiB.
	MaxValue int
	// NotApplicable names the cases that cannot happen with this backend
	// (a local file has no server to be slow), with the reason; those
	// cases are skipped, saying why.
	NotApplicable map[string]string
}

// Run runs every case of the suite against f.
func Run(t *testing.T, f Fixture) {
	ctx := context.Background()
	run := func(name string, fn func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			if why, ok := f.NotApplicable[name]; ok {
				t.Skip("not applicable: " + why)
			}
			fn(t)
		})
	}
	get := func(t *testing.T, path, key string) provider.Secret {
		t.Helper()
		s, err := f.Provider.Get(ctx, path)
		if err != nil {
			t.Fatalf("Get(%q): %v", path, err)
		}
		if key != "" {
			v, err := provider.Field(s.Value, key)
			if err != nil {
				t.Fatalf("Get(%q) field %q: %v", path, key, err)
			}
			s.Value = v
		}
		return s
	}
	roundTrip := func(t *testing.T, value []byte) {
		t.Helper()
		path, key := f.Put(t, Name(), value)
		s := get(t, path, key)
		if !bytes.Equal(s.Value, value) {
			t.Fatalf("Get(%q) = %d bytes %q..., want the %d bytes stored", path, len(s.Value), head(s.Value), len(value))
		}
		if s.Version == "" {
			t.Errorf("Get(%q) gave no version", path)
		}
	}

	run("get", func(t *testing.T) {
		roundTrip(t, []byte("s3cr3t-"+Canary+"-é€"))
	})

	run("json key", func(t *testing.T) {
		path := f.PutJSON(t, Name(), map[string]any{
			"user": "app", "password": "pw-" + Canary, "port": 5432, "tls": map[string]any{"mode": "verify"},
		})
		s := get(t, path, "")
		for key, want := range map[string]string{
			"password": "pw-" + Canary, "user": "app", "port": "5432", "tls": `{"mode":"verify"}`,
		} {
			v, err := provider.Field(s.Value, key)
			if err != nil || string(v) != want {
				t.Errorf("field %q = %q, %v; want %q", key, v, err, want)
			}
		}
		_, err := provider.Field(s.Value, "nope")
		if !errors.Is(err, provider.ErrNotFound) {
			t.Errorf("missing field: err = %v, want ErrNotFound", err)
		}
		checkNoCanary(t, err)
	})

	run("missing", func(t *testing.T) {
		path := f.Path(Name())
		_, err := f.Provider.Get(ctx, path)
		wantClass(t, "Get", err, provider.ErrNotFound, path)
		_, err = f.Provider.Version(ctx, path)
		wantClass(t, "Version", err, provider.ErrNotFound, path)
	})

	run("denied", func(t *testing.T) {
		path := f.Denied(t, []byte("denied-"+Canary))
		_, err := f.Provider.Get(ctx, path)
		wantClass(t, "Get", err, provider.ErrDenied, path)
		_, err = f.Provider.Version(ctx, path)
		wantClass(t, "Version", err, provider.ErrDenied, path)
	})

	run("version change detected", func(t *testing.T) {
		name := Name()
		path, key := f.Put(t, name, []byte("v1-"+Canary))
		v1, err := f.Provider.Version(ctx, path)
		if err != nil || v1 == "" {
			t.Fatalf("Version(%q) = %q, %v", path, v1, err)
		}
		if again, err := f.Provider.Version(ctx, path); err != nil || again != v1 {
			t.Fatalf("Version(%q) again = %q, %v; want the unchanged %q", path, again, err, v1)
		}
		f.Put(t, name, []byte("v2-"+Canary))
		v2, err := f.Provider.Version(ctx, path)
		if err != nil {
			t.Fatalf("Version(%q) after a change: %v", path, err)
		}
		if v2 == v1 {
			t.Fatalf("Version(%q) = %q before and after a change", path, v1)
		}
		s := get(t, path, key)
		if string(s.Value) != "v2-"+Canary || s.Version != v2 {
			t.Fatalf("Get(%q) = %q version %q, want the new value at version %q", path, s.Value, s.Version, v2)
		}
	})

	run("binary value", func(t *testing.T) {
		var value []byte
		if f.Binary {
			for i := range 256 {
				value = append(value, byte(i))
			}
		} else {
			value = []byte("\x00\x01\x02\t\n\r\x1b\x7f-é-\u2028-\U0001F511")
		}
		value = append(value, Canary...)
		roundTrip(t, value)
	})

	run("1 MiB value", func(t *testing.T) {
		size := 1 << 20
		if f.MaxValue > 0 {
			size = f.MaxValue
			t.Logf("the real service accepts at most %d bytes; testing that size", size)
		}
		value := make([]byte, size)
		const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
		for i := range value {
			value[i] = alphabet[(i*7+i/13)%len(alphabet)]
		}
		copy(value[size/2:], Canary)
		roundTrip(t, value)
	})

	run("unreachable server", func(t *testing.T) {
		p := f.Unreachable(t, 2*time.Second)
		path := f.Path(Name())
		_, err := p.Get(ctx, path)
		wantClass(t, "Get", err, provider.ErrUnreachable, path)
		_, err = p.Version(ctx, path)
		wantClass(t, "Version", err, provider.ErrUnreachable, path)
	})

	run("slow server hits the timeout", func(t *testing.T) {
		path, _ := f.Put(t, Name(), []byte("slow-"+Canary))
		p := f.Slow(t, 200*time.Millisecond)
		_, err := p.Get(ctx, path)
		wantClass(t, "Get", err, provider.ErrUnreachable, path)
		if !strings.Contains(err.Error(), "200ms") {
			t.Errorf("Get error %q does not name the 200ms timeout", err)
		}
		_, err = p.Version(ctx, path)
		wantClass(t, "Version", err, provider.ErrUnreachable, path)
	})
}

// wantClass checks that err is of class want, names the path and holds no
// canary.
func wantClass(t *testing.T, call string, err, want error, path string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s(%q): err = %v, want %v", call, path, err, want)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("%s error %q does not name the path %q", call, err, path)
	}
	checkNoCanary(t, err)
}

func checkNoCanary(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), Canary) {
		t.Fatalf("error holds a secret value: %v", err)
	}
}

// Name returns a fresh secret name made of letters, digits and '-', valid
// in every backend.
func Name() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "t-" + hex.EncodeToString(b[:])
}

func head(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}
