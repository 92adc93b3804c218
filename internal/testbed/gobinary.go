package testbed

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

type builtBinary struct {
	path string
	err  error
}

var binaries struct {
	sync.Mutex
	m map[string]func() builtBinary
}

// GoBinary builds a static (CGO_ENABLED=0, -trimpath) binary of a package of
// this repository, such as "./cmd/dso-init" or
// "github.com/dso-project/dso/cmd/dso-init", and returns its path. Each package
// is built once per test process; concurrent callers wait for the same build.
// A build failure fails the test with the compiler's output.
func GoBinary(t testing.TB, pkg string) string {
	t.Helper()
	binaries.Lock()
	if binaries.m == nil {
		binaries.m = make(map[string]func() builtBinary)
	}
	build, ok := binaries.m[pkg]
	if !ok {
		build = sync.OnceValue(func() builtBinary { return buildBinary(pkg) })
		binaries.m[pkg] = build
	}
	binaries.Unlock()

	b := build()
	if b.err != nil {
		t.Fatalf("testbed: building %s: %v", pkg, b.err)
	}
	return b.path
}

// buildBinary builds pkg into the user's cache directory. The binary is
// written under a temporary name and renamed into place, so test processes
// running at the same time never see a half-written file.
func buildBinary(pkg string) builtBinary {
	root, err := repoRoot()
	if err != nil {
		return builtBinary{err: err}
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	// One directory per checkout: another checkout's tests (a second
	// worktree) must not replace these binaries with its own.
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(cache, "dso-testbed", "bin", hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return builtBinary{err: err}
	}
	name := strings.NewReplacer("/", "_", ".", "_").Replace(strings.TrimPrefix(pkg, "github.com/dso-project/dso/"))
	final := filepath.Join(dir, strings.Trim(name, "_"))
	tmp := fmt.Sprintf("%s.tmp-%s", final, runID)

	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return builtBinary{err: fmt.Errorf("%w\n%s", err, out)}
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = os.Remove(tmp)
		return builtBinary{err: err}
	}
	return builtBinary{path: final}
}
