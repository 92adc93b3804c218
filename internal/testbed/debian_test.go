package testbed_test

import (
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

func TestDebianImage(t *testing.T) {
	start := time.Now()
	image := testbed.DebianImage(t)
	t.Logf("DebianImage: %s in %v", image, time.Since(start).Round(time.Millisecond))
	if again := testbed.DebianImage(t); again != image {
		t.Errorf("DebianImage returned %s, then %s", image, again)
	}

	inspect, err := testbed.Docker(t).ImageInspect(t.Context(), image)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := inspect.Config; cfg != nil && (len(cfg.Cmd) > 0 || len(cfg.Entrypoint) > 0) {
		t.Errorf("image %s has cmd %q and entrypoint %q; an imported image has neither", image, cfg.Cmd, cfg.Entrypoint)
	}

	// Every program the end-to-end tests use, and the users they run as.
	check := `set -e
for p in nginx redis-server redis-cli haproxy openssl psql pkill /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/postgres /lib/systemd/systemd dbus-daemon; do
	command -v "$p" >/dev/null || { echo "missing $p"; exit 1; }
done
id -u postgres >/dev/null
id -u redis >/dev/null
id -u www-data >/dev/null
echo ok`
	id := testbed.RunContainer(t, client.ContainerCreateOptions{
		Config: &container.Config{Image: image, Cmd: []string{"/bin/sh", "-c", check}},
	})
	code := testbed.WaitExit(t, id, time.Minute)
	stdout, stderr := testbed.Logs(t, id)
	if code != 0 || strings.TrimSpace(stdout) != "ok" {
		t.Errorf("checking the image's programs: exit %d\n%s%s", code, stdout, stderr)
	}
}
