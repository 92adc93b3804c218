package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/rotate"
)

// composeLabel is the label Compose puts on everything of a project.
const composeLabel = "com.docker.compose.project"

// pluginDirs are the directories the docker CLI searches for CLI plugins,
// after the user's own ($DOCKER_CONFIG/cli-plugins or ~/.docker/cli-plugins).
var pluginDirs = []string{
	"/usr/local/lib/docker/cli-plugins",
	"/usr/local/libexec/docker/cli-plugins",
	"/usr/lib/docker/cli-plugins",
	"/usr/libexec/docker/cli-plugins",
}

var composeBinary = sync.OnceValues(func() (string, error) {
	var dirs []string
	if cfg := os.Getenv("DOCKER_CONFIG"); cfg != "" {
		dirs = append(dirs, filepath.Join(cfg, "cli-plugins"))
	} else if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".docker", "cli-plugins"))
	}
	dirs = append(dirs, pluginDirs...)
	var tried []string
	for _, dir := range dirs {
		bin := filepath.Join(dir, "docker-compose")
		if _, err := os.Stat(bin); err != nil {
			continue
		}
		if err := checkComposeVersion(bin); err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", bin, err))
			continue
		}
		return bin, nil
	}
	if len(tried) > 0 {
		return "", fmt.Errorf("no Compose v2 found (%s)", strings.Join(tried, "; "))
	}
	return "", fmt.Errorf("no Compose v2 plugin (docker-compose) in %s", strings.Join(dirs, ", "))
})

// checkComposeVersion runs `bin version --short` and checks that it is
// Compose v2 or later (the Go Compose), not the Python docker-compose 1.x.
func checkComposeVersion(bin string) error {
	out, err := exec.Command(bin, "version", "--short").Output()
	if err != nil {
		return fmt.Errorf("version: %w", err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, _, _ := strings.Cut(v, ".")
	if n, err := strconv.Atoi(major); err != nil || n < 2 {
		return fmt.Errorf("version %q is not Compose v2 or later", v)
	}
	return nil
}

// ComposeBinary returns the path of the Compose v2 CLI plugin, the one
// `docker compose` runs. The plugin also runs standalone: `BIN -p NAME up -d`.
// It fails the test when there is none (scripts/test.sh installs it).
func ComposeBinary(t testing.TB) string {
	t.Helper()
	bin, err := composeBinary()
	if err != nil {
		t.Fatalf("testbed: %v; run scripts/install.sh or scripts/test.sh to build it from tools/compose", err)
	}
	return bin
}

var unsafeName = regexp.MustCompile(`[^a-z0-9]+`)

// Project returns a Compose project name unique to this test, for running
// Compose on the project in dir. At t.Cleanup it runs
// `docker compose -p NAME down -v --remove-orphans` in dir and then removes
// any container, network and volume still labelled with the project.
func Project(t testing.TB, dir string) string {
	t.Helper()
	cli := Docker(t)
	bin := ComposeBinary(t)
	base := strings.Trim(unsafeName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 30 {
		base = base[:30]
	}
	name := "dsotest-" + base + "-" + uniqueSuffix()
	t.Cleanup(func() {
		ctx, cancel := cleanupContext()
		defer cancel()
		anonymous, _ := rotate.AnonymousVolumes(ctx, cli, name)
		down := exec.CommandContext(ctx, bin, "-p", name, "down", "-v", "--remove-orphans")
		down.Dir = dir
		if out, err := down.CombinedOutput(); err != nil {
			t.Logf("testbed: cleanup: compose down of %s: %v\n%s", name, err, out)
		}
		removeProject(ctx, t, cli, name)
		for _, v := range anonymous {
			if _, err := cli.VolumeRemove(ctx, v, client.VolumeRemoveOptions{Force: true}); err != nil && !isNotFound(err) {
				t.Errorf("testbed: cleanup: removing anonymous volume %s of project %s: %v", v, name, err)
			}
		}
	})
	return name
}

// Compose returns a command running the Compose v2 plugin with -p project in
// dir, e.g. Compose(t, dir, project, "up", "-d").
func Compose(t testing.TB, dir, project string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), ComposeBinary(t), append([]string{"-p", project}, args...)...)
	cmd.Dir = dir
	return cmd
}

// staleEndpoint reports whether err, from removing network id, says it has
// active endpoints while no container is attached to it.
func staleEndpoint(ctx context.Context, cli client.APIClient, id string, err error) bool {
	if !strings.Contains(err.Error(), "has active endpoints") {
		return false
	}
	n, ierr := cli.NetworkInspect(ctx, id, client.NetworkInspectOptions{})
	return ierr == nil && len(n.Network.Containers) == 0
}

// removeProject removes whatever of the project Compose left behind.
func removeProject(ctx context.Context, t testing.TB, cli client.APIClient, project string) {
	t.Helper()
	f := make(client.Filters).Add("label", composeLabel+"="+project)
	containers, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Errorf("testbed: cleanup: listing containers of project %s: %v", project, err)
	}
	for _, c := range containers.Items {
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
			t.Errorf("testbed: cleanup: removing container %s of project %s: %v", c.ID[:12], project, err)
		}
	}
	networks, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	if err != nil {
		t.Errorf("testbed: cleanup: listing networks of project %s: %v", project, err)
	}
	for _, n := range networks.Items {
		_, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{})
		switch {
		case err == nil || isNotFound(err):
		case staleEndpoint(ctx, cli, n.ID, err):
			// Seen on Docker 20.10 after the agent was killed during a
			// rotation (README, Limits): the engine keeps an endpoint of
			// no container, and only a restart of dockerd removes it. The
			// test's own checks passed; the network stays.
			t.Logf("testbed: cleanup: network %s of project %s keeps an endpoint of no container (an engine fault: see the README's Limits); left on the engine: %v", n.Name, project, err)
		default:
			t.Errorf("testbed: cleanup: removing network %s of project %s: %v", n.Name, project, err)
		}
	}
	volumes, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
	if err != nil {
		t.Errorf("testbed: cleanup: listing volumes of project %s: %v", project, err)
	}
	for _, v := range volumes.Items {
		if _, err := cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true}); err != nil && !isNotFound(err) {
			t.Errorf("testbed: cleanup: removing volume %s of project %s: %v", v.Name, project, err)
		}
	}
}
