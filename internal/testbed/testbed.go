// Package testbed is the shared test bed for tests that run against the real
// Docker engine: an engine client, static binaries of repository packages,
// images built from scratch (the testapp, busybox) or imported (a Debian 12
// image with real applications, built once per machine and shared), Compose
// v2 projects, commands run in containers and HTTP probes of published
// ports. It is used only by tests.
//
// Everything a helper creates on the engine is removed at t.Cleanup, so a
// test run leaves the engine as it found it; the one exception is the cached
// Debian image of DebianImage, which every run reuses. When the engine, a tool or
// root is missing, tests are skipped, except under CI (InCI) where they fail.
package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// Label is set on every image, network and container the test bed makes, so
// strays are easy to find (scripts/test.sh removes those of a killed run).
const Label = "dso.test"

// cleanupTimeout bounds each removal done at t.Cleanup.
const cleanupTimeout = 2 * time.Minute

// InCI reports whether the tests run under CI: the variable CI holds any
// true value strconv.ParseBool accepts (1, t, true, TRUE...). It is the one
// definition of "in CI" for every test: under CI nothing a CI machine can
// provide (the engine, a tool, root) may be skipped for lack of it.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// Unavailable skips the test for lack of something the test bed provides
// (the engine, a tool, root), or fails it under CI, where scripts/test.sh
// provides everything.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (under CI this is a failure, not a skip)", msg)
	}
	t.Skipf("%s; skipping (under CI this fails)", msg)
}

// NeedRoot skips the test when it does not run as root, or fails it under
// CI (which runs as root); why says what needs root.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "not root: %s", why)
	}
}

type engine struct {
	cli client.APIClient
	err error
}

var engineOnce = sync.OnceValue(func() engine {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return engine{err: fmt.Errorf("creating Docker client: %w", err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		_ = cli.Close()
		return engine{err: fmt.Errorf("Docker engine not reachable: %w", err)}
	}
	return engine{cli: cli}
})

// Docker returns a client for the Docker engine named by the environment
// (DOCKER_HOST etc.), with the API version negotiated. The client is shared
// by the whole test process; do not close it. When the engine cannot be
// reached the test is skipped, or fails under CI.
func Docker(t testing.TB) client.APIClient {
	t.Helper()
	e := engineOnce()
	if e.err != nil {
		Unavailable(t, "%v", e.err)
	}
	return e.cli
}

var repoRoot = sync.OnceValues(func() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(string(b)) == "github.com/dso-project/dso" {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module github.com/dso-project/dso above the working directory")
		}
		dir = parent
	}
})

func modulePath(gomod string) string {
	for line := range strings.Lines(gomod) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// RepoRoot returns the root of the repository (the directory holding the
// go.mod of github.com/dso-project/dso), found from the working directory.
// It panics when there is none: tests always run inside the repository.
func RepoRoot() string {
	dir, err := repoRoot()
	if err != nil {
		panic("testbed: " + err.Error())
	}
	return dir
}

// runID is unique to this test process; it keeps names of images and
// projects apart between concurrent test processes.
var runID = func() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

var seq struct {
	sync.Mutex
	n int
}

// uniqueSuffix returns a suffix that no other call in any test process returns.
func uniqueSuffix() string {
	seq.Lock()
	defer seq.Unlock()
	seq.n++
	return fmt.Sprintf("%s%d", runID, seq.n)
}

// cleanupContext is the context for removals at t.Cleanup, when the test's
// own context is already cancelled.
func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), cleanupTimeout)
}
