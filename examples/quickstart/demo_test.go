// Package quickstart tests the quickstart example (compose.yaml, dso.yaml,
// the app under ./app) the way a new user meets it: through scripts/demo.sh
// with the docker CLI plugins installed, against the real Docker engine.
package quickstart

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// TestDemoShowsSecretsReceived runs `scripts/demo.sh --down` as a user with
// a fresh HOME and docker config, and checks that it reports both secrets
// received, shows no value, and leaves nothing running.
func TestDemoShowsSecretsReceived(t *testing.T) {
	docker := testbed.Docker(t)
	root := testbed.RepoRoot()
	example := filepath.Join(root, "examples", "quickstart")
	home := t.TempDir()
	installPlugins(t, home)
	env := userEnv(t, home)

	// Removed last: the image compose built for the project.
	var project string
	t.Cleanup(func() {
		_, err := docker.ImageRemove(context.Background(), project+"-app", client.ImageRemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Logf("removing image %s-app: %v", project, err)
		}
	})
	project = testbed.Project(t, example)
	t.Cleanup(func() {
		stop := exec.Command("docker", "dso", "agent", "stop")
		stop.Env = env
		if out, err := stop.CombinedOutput(); err != nil {
			t.Logf("docker dso agent stop: %v\n%s", err, out)
		}
	})

	demo := exec.CommandContext(t.Context(), "bash", filepath.Join(root, "scripts", "demo.sh"), "--down", "-p", project)
	demo.Env = env
	var out bytes.Buffer
	demo.Stdout, demo.Stderr = &out, &out
	if err := demo.Run(); err != nil {
		t.Fatalf("scripts/demo.sh --down: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"DB_PASSWORD: set (48 bytes, sha256 prefix ",
		"API key file: /run/dso/secrets/API_KEY_FILE (48 bytes, sha256 prefix ",
		"the app received both secrets: their SHA-256 prefixes match the values stored",
		"docker dso down -p " + project,
		"docker dso agent stop",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, got)
		}
	}

	// The values the demo stored appear nowhere in what it printed.
	for _, name := range []string{"quickstart/db_password", "quickstart/api_key"} {
		get := exec.Command("docker", "dso", "secret", "get", name)
		get.Env = append(env,
			"DSO_VAULT_FILE="+filepath.Join(home, ".dso", "demo", "vault.enc"),
			"DSO_MASTER_KEY_FILE="+filepath.Join(home, ".dso", "demo", "master.key"))
		value, err := get.Output()
		if err != nil || len(value) != 48 {
			t.Fatalf("docker dso secret get %s from the demo vault: %v (%d bytes)", name, err, len(value))
		}
		if bytes.Contains(out.Bytes(), value) {
			t.Errorf("the demo printed the value of %s", name)
		}
	}
	if _, err := os.Stat(filepath.Join(home, ".dso", "vault.enc")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the demo touched the user's own vault (~/.dso/vault.enc): %v", err)
	}

	// --down took the project down.
	list, err := docker.ContainerList(t.Context(), client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", "com.docker.compose.project="+project),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("after --down, project %s still has %d containers", project, len(list.Items))
	}
}

// installPlugins installs docker-dso, dso-init and Compose v2 into
// home/.docker/cli-plugins, as scripts/install.sh does.
func installPlugins(t *testing.T, home string) {
	t.Helper()
	plugins := filepath.Join(home, ".docker", "cli-plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, pkg := range map[string]string{"docker-dso": "./cmd/docker-dso", "dso-init": "./cmd/dso-init"} {
		b, err := os.ReadFile(testbed.GoBinary(t, pkg))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(plugins, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(testbed.ComposeBinary(t), filepath.Join(plugins, "docker-compose")); err != nil {
		t.Fatal(err)
	}
}

// userEnv is the environment of a user whose home is home, publishing the
// quickstart on a free port. Go keeps the caches of the test's user, so the
// demo's build of the app stays warm.
func userEnv(t *testing.T, home string) []string {
	t.Helper()
	goenv, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	caches := strings.Fields(string(goenv))
	if len(caches) != 2 {
		t.Fatalf("go env GOCACHE GOMODCACHE printed %q", goenv)
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "HOME", name == "DOCKER_CONFIG", name == "QUICKSTART_PORT",
			strings.HasPrefix(name, "DSO_"), strings.HasPrefix(name, "COMPOSE_"):
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+home,
		"DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"GOCACHE="+caches[0],
		"GOMODCACHE="+caches[1],
		"QUICKSTART_PORT="+strconv.Itoa(freePort(t)),
	)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
