package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// debianSuite is the Debian release of the image DebianImage builds.
const debianSuite = "bookworm"

// debianSources are the apt sources mmdebstrap installs from: Debian 12 with
// its updates and security archives, written out so that the build does not
// depend on the host's own sources.
var debianSources = []string{
	"deb http://deb.debian.org/debian bookworm main",
	"deb http://deb.debian.org/debian bookworm-updates main",
	"deb http://deb.debian.org/debian-security bookworm-security main",
}

// debianPackages are installed on top of mmdebstrap's apt variant: the real
// applications of the end-to-end tests, and systemd as an init for the tests
// of the systemd unit (one image, so that the machine builds one).
var debianPackages = []string{
	"dbus",
	"haproxy",
	"nginx-light",
	"openssl",
	"postgresql",
	"procps",
	"redis-server",
	"systemd",
	"systemd-sysv",
}

// rootfsBuildTimeout bounds building a root file system (about 5 minutes
// cold on 2 cores) and importing it.
const rootfsBuildTimeout = 30 * time.Minute

// rootfsImage is an image made from a Debian root file system built by
// mmdebstrap (variant apt, Debian 12 from debianSources) and `docker
// import`ed, cached once per machine under a tag that is a hash of its
// recipe: a change to any of it builds a new image under a new name.
type rootfsImage struct {
	name     string   // the tarball's base name and the image's repository under dso-testbed/
	packages []string // installed on top of the apt variant
	changes  []string // Dockerfile instructions applied at import (docker import --change)
}

var debian12 = rootfsImage{name: "debian12", packages: debianPackages}

func (r rootfsImage) recipe() string {
	s := fmt.Sprintf("mmdebstrap --variant=apt %s\ninclude=%s\n%s\n",
		debianSuite, strings.Join(r.packages, ","), strings.Join(debianSources, "\n"))
	for _, c := range r.changes {
		s += "change=" + c + "\n"
	}
	return s
}

func (r rootfsImage) key() string {
	sum := sha256.Sum256([]byte(r.recipe()))
	return hex.EncodeToString(sum[:])[:12]
}

func (r rootfsImage) ref() string { return "dso-testbed/" + r.name + ":" + r.key() }

// DebianImageRef is the name under which DebianImage imports the image. The
// tag is a hash of the recipe (suite, sources, package list).
func DebianImageRef() string { return debian12.ref() }

var debianImage = sync.OnceValues(func() (string, error) {
	e := engineOnce()
	if e.err != nil {
		return "", e.err
	}
	return ensureRootfsImage(e.cli, debian12)
})

// DebianImage returns the name of a Debian 12 image made as a user makes one
// without a registry: a root file system built from Debian's archive by
// mmdebstrap (variant apt, with PostgreSQL 15, nginx-light, Redis, HAProxy,
// openssl, procps, and systemd + systemd-sysv + dbus), then `docker import`ed.
// Like every imported image it has no CMD and no ENTRYPOINT.
//
// It is built once per machine: the tarball is kept in the tools directory
// (${DSO_TOOLS_DIR:-~/.cache/dso-tools}/debian12-<key>.tar) and the image is
// reused while it exists; a file lock there makes test processes running at
// the same time wait for one build. A cold build takes several minutes and
// needs mmdebstrap (scripts/tools/mmdebstrap.sh) and root. The image is shared
// by every test run: tests must never remove it.
func DebianImage(t testing.TB) string {
	t.Helper()
	Docker(t) // skips, or fails under CI, without an engine
	ref, err := debianImage()
	if err != nil {
		t.Fatalf("testbed: Debian image: %v", err)
	}
	return ref
}

// toolsDir is where built tools and the image tarballs are cached, the same
// directory as scripts/tools/*.sh use.
func toolsDir() (string, error) {
	if dir := os.Getenv("DSO_TOOLS_DIR"); dir != "" {
		return dir, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the tools directory: %w", err)
	}
	return filepath.Join(home, ".cache", "dso-tools"), nil
}

// ensureRootfsImage returns r's image, building its tarball and importing
// it when the engine lacks it, under a file lock so that test processes
// running at the same time build it once.
func ensureRootfsImage(cli client.APIClient, r rootfsImage) (string, error) {
	ref := r.ref()
	ctx, cancel := context.WithTimeout(context.Background(), rootfsBuildTimeout)
	defer cancel()
	if imageExists(ctx, cli, ref) {
		return ref, nil
	}
	dir, err := toolsDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	base := filepath.Join(dir, r.name+"-"+r.key())
	unlock, err := lockFile(base + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have imported it while this one waited for the lock.
	if imageExists(ctx, cli, ref) {
		return ref, nil
	}
	tarball := base + ".tar"
	if _, err := os.Stat(tarball); err != nil {
		if err := buildRootfs(ctx, r.packages, tarball); err != nil {
			return "", err
		}
	}
	if err := importImage(ctx, cli, tarball, ref, r.changes); err != nil {
		return "", err
	}
	return ref, nil
}

func imageExists(ctx context.Context, cli client.APIClient, ref string) bool {
	_, err := cli.ImageInspect(ctx, ref)
	return err == nil
}

// lockFile takes an exclusive flock on path, waiting for whoever holds it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { _ = f.Close() }, nil
}

// buildRootfs runs mmdebstrap (Debian 12, variant apt, with packages) into
// a temporary file beside tarball and renames it into place once complete.
func buildRootfs(ctx context.Context, packages []string, tarball string) error {
	bin := os.Getenv("DSO_MMDEBSTRAP_BIN")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("mmdebstrap"); err != nil {
			return errors.New("mmdebstrap is not installed (scripts/tools/mmdebstrap.sh installs it; scripts/test.sh runs that)")
		}
	}
	tmp := fmt.Sprintf("%s.tmp-%s", tarball, runID)
	defer os.RemoveAll(tmp)
	args := []string{"--variant=apt", "--format=tar", "--include=" + strings.Join(packages, ","), debianSuite, tmp}
	args = append(args, debianSources...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mmdebstrap: %w\n%s", err, tail(log.String(), 4000))
	}
	return os.Rename(tmp, tarball)
}

// importImage does what `docker import --change C... TARBALL REF` does.
func importImage(ctx context.Context, cli client.APIClient, tarball, ref string, changes []string) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	res, err := cli.ImageImport(ctx, client.ImageImportSource{Source: f, SourceName: "-"}, ref, client.ImageImportOptions{Changes: changes})
	if err != nil {
		return fmt.Errorf("importing %s as %s: %w", tarball, ref, err)
	}
	defer res.Close()
	if log, err := readBuildOutput(res); err != nil {
		return fmt.Errorf("importing %s as %s: %w\n%s", tarball, ref, err, log)
	}
	return nil
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
