package plugin_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/plugin"
	"github.com/dso-project/dso/internal/provider/providertest"
	"github.com/dso-project/dso/internal/provider/retry"
)

// bin is the example plugin, built once by TestMain into a directory with
// its SHA256SUMS; sum is its checksum.
var bin, sum string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dso-plugin-test")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "dso-provider-example")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/dso-project/dso/cmd/dso-provider-example").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: building the example plugin: %v\n%s", err, out)
		os.Exit(1)
	}
	b, _ := os.ReadFile(bin)
	h := sha256.Sum256(b)
	sum = hex.EncodeToString(h[:])
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newProvider(t testing.TB, opts map[string]string, pol retry.Policy) *plugin.Provider {
	t.Helper()
	p, err := plugin.New(plugin.Options{Name: "files", Path: bin, SHA256: sum, Options: opts, Retry: pol})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// write replaces dir/rel atomically.
func write(t testing.TB, dir, rel string, value []byte) {
	t.Helper()
	name := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		t.Fatal(err)
	}
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, value, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	fast := retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond}
	providertest.Run(t, providertest.Fixture{
		Provider: newProvider(t, map[string]string{"dir": dir, "allow": "app/*"}, fast),
		Put: func(t *testing.T, name string, value []byte) (string, string) {
			write(t, dir, "app/"+name, value)
			return "app/" + name, ""
		},
		PutJSON: func(t *testing.T, name string, obj map[string]any) string {
			b, _ := json.Marshal(obj)
			write(t, dir, "app/"+name, b)
			return "app/" + name
		},
		Path: func(name string) string { return "app/" + name },
		Denied: func(t *testing.T, value []byte) string {
			write(t, dir, "denied/x", value)
			return "denied/x"
		},
		Unreachable: func(t *testing.T, timeout time.Duration) provider.Provider {
			return newProvider(t, map[string]string{"dir": filepath.Join(dir, "unmounted")},
				retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond, Timeout: timeout})
		},
		Slow: func(t *testing.T, timeout time.Duration) provider.Provider {
			return newProvider(t, map[string]string{"dir": dir, "latency": (5 * timeout).String()},
				retry.Policy{Attempts: 2, Backoff: 10 * time.Millisecond, Timeout: timeout})
		},
		Binary: true,
	})
}

// The plugin is found as dso-provider-<type> in the first directory that
// has it, and its checksum is taken from SHA256SUMS there.
func TestDiscoveryAndChecksumsFile(t *testing.T) {
	empty, plugins := t.TempDir(), t.TempDir()
	b, _ := os.ReadFile(bin)
	target := filepath.Join(plugins, "dso-provider-files")
	if err := os.WriteFile(target, b, 0o755); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	write(t, data, "k", []byte("v"))
	opts := plugin.Options{Type: "files", Dirs: []string{empty, plugins}, Options: map[string]string{"dir": data}}

	_, err := plugin.New(opts)
	if err == nil || !strings.Contains(err.Error(), sum) || !strings.Contains(err.Error(), "no pinned checksum") {
		t.Fatalf("no checksum anywhere: %v; want a refusal showing the actual checksum", err)
	}
	sums := filepath.Join(plugins, plugin.ChecksumsFile)
	os.WriteFile(sums, []byte(strings.Repeat("0", 64)+"  other\n"+sum+"  dso-provider-files\n"), 0o644)
	p, err := plugin.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if s, err := p.Get(context.Background(), "k"); err != nil || string(s.Value) != "v" {
		t.Fatalf("Get = %q, %v", s.Value, err)
	}
	if _, err := plugin.New(plugin.Options{Type: "nope", Dirs: []string{empty, plugins}}); err == nil || !strings.Contains(err.Error(), "no executable dso-provider-nope in "+empty) {
		t.Fatalf("missing plugin: %v", err)
	}
}

// A binary that does not match its checksum is refused, before it runs
// and, if it changes after New, before it starts.
func TestIntegrityMismatch(t *testing.T) {
	wrong := strings.Repeat("ab", 32)
	_, err := plugin.New(plugin.Options{Type: "files", Path: bin, SHA256: wrong})
	if err == nil || !strings.Contains(err.Error(), "fails its integrity check") || !strings.Contains(err.Error(), sum) {
		t.Fatalf("wrong pinned checksum: %v", err)
	}
	if _, err := plugin.New(plugin.Options{Type: "files", Path: bin, SHA256: "xyz"}); err == nil || !strings.Contains(err.Error(), "64 hex digits") {
		t.Fatalf("malformed checksum: %v", err)
	}

	copyPath := filepath.Join(t.TempDir(), "dso-provider-files")
	b, _ := os.ReadFile(bin)
	os.WriteFile(copyPath, b, 0o755)
	p, err := plugin.New(plugin.Options{Type: "files", Path: copyPath, SHA256: sum, Options: map[string]string{"dir": t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	f, _ := os.OpenFile(copyPath, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte("tampered"))
	f.Close()
	_, err = p.Get(context.Background(), "k")
	if err == nil || !strings.Contains(err.Error(), "fails its integrity check") {
		t.Fatalf("binary changed after New: %v", err)
	}
}

func TestBadOptionsRefusedByPlugin(t *testing.T) {
	p := newProvider(t, map[string]string{"dir": t.TempDir(), "colour": "blue"}, retry.Policy{})
	_, err := p.Get(context.Background(), "k")
	if err == nil || !strings.Contains(err.Error(), `unknown option "colour"`) || errors.Is(err, provider.ErrUnreachable) {
		t.Fatalf("unknown option: %v", err)
	}
}

func TestCloseStopsThePlugin(t *testing.T) {
	p := newProvider(t, map[string]string{"dir": t.TempDir()}, retry.Policy{})
	if _, err := p.Version(context.Background(), "k"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("Version of a missing file: %v", err)
	}
	p.Close()
	if _, err := p.Version(context.Background(), "k"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("after Close: %v", err)
	}
}

func TestFromConfig(t *testing.T) {
	pc := config.Provider{Type: config.ProviderPlugin, Plugin: bin, Auth: config.Auth{Params: map[string]string{"sha256": sum, "dir": t.TempDir()}}}
	p, err := plugin.FromConfig("files", pc)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Version(context.Background(), "k"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("plugin from config: %v", err)
	}
	pc.Auth.Params["sha256"] = strings.Repeat("0", 64)
	if _, err := plugin.FromConfig("files", pc); err == nil || !strings.Contains(err.Error(), "integrity") {
		t.Errorf("pinned wrong checksum: %v", err)
	}
}
