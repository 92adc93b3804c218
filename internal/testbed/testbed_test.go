package testbed_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

func TestTestappContainer(t *testing.T) {
	image := testbed.TestappImage(t)
	id := testbed.RunContainer(t, client.ContainerCreateOptions{
		Config: &container.Config{
			Image: image,
			Env:   []string{"DSO_TESTBED_X=canary-value-1"},
			User:  "1000:1000",
			Cmd:   []string{"extra", "args"},
		},
		HostConfig: &container.HostConfig{PortBindings: testbed.PublishLocal("8080/tcp")},
	})
	base := "http://" + testbed.HostAddr(t, id, "8080/tcp")

	for _, tc := range []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/healthz", http.StatusOK, "ok"},
		{"/env/DSO_TESTBED_X", http.StatusOK, "canary-value-1"},
		{"/env/DSO_TESTBED_UNSET", http.StatusNotFound, ""},
		{"/id", http.StatusOK, "1000 1000"},
		{"/stat?path=/testapp", http.StatusOK, "0 0 755"},
		{"/file?path=/no/such/file", http.StatusNotFound, ""},
		{"/hup", http.StatusOK, "0"},
	} {
		status, body := testbed.HTTPGet(t, base+tc.path)
		if status != tc.wantStatus || (tc.wantBody != "" && body != tc.wantBody) {
			t.Errorf("GET %s = %d %q, want %d %q", tc.path, status, body, tc.wantStatus, tc.wantBody)
		}
	}

	_, body := testbed.HTTPGet(t, base+"/args")
	var args []string
	if err := json.Unmarshal([]byte(body), &args); err != nil || strings.Join(args, " ") != "/testapp extra args" {
		t.Errorf("GET /args = %q (%v), want [/testapp extra args]", body, err)
	}

	cli := testbed.Docker(t)
	if _, err := cli.ContainerKill(t.Context(), id, client.ContainerKillOptions{Signal: "HUP"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, b := testbed.HTTPGet(t, base+"/hup"); return b == "1" }, "one SIGHUP counted")

	if status, _ := testbed.HTTPGet(t, base+"/exit?code=3"); status != http.StatusOK {
		t.Fatalf("GET /exit?code=3 = %d", status)
	}
	if code := testbed.WaitExit(t, id, 10*time.Second); code != 3 {
		t.Errorf("exit status = %d, want 3", code)
	}
	if stdout, stderr := testbed.Logs(t, id); strings.Contains(stdout+stderr, "canary-value-1") {
		t.Errorf("testapp logged a served value: %q %q", stdout, stderr)
	}
}

func TestBusybox(t *testing.T) {
	image := testbed.BusyboxImage(t)
	id := testbed.RunContainer(t, client.ContainerCreateOptions{
		Config: &container.Config{Image: image, Cmd: []string{"sh", "-c", "echo hi > /tmp/x && cat /tmp/x"}},
	})
	if code := testbed.WaitExit(t, id, 30*time.Second); code != 0 {
		t.Errorf("exit status = %d, want 0", code)
	}
	if stdout, _ := testbed.Logs(t, id); stdout != "hi\n" {
		t.Errorf("stdout = %q, want \"hi\\n\"", stdout)
	}
}

func TestComposeProject(t *testing.T) {
	image := testbed.TestappImage(t)
	dir := t.TempDir()
	composeFile := `services:
  app:
    image: ` + image + `
    environment:
      DSO_TESTBED_Y: canary-value-2
    ports:
      - "127.0.0.1::8080"
    tmpfs:
      - /run/secrets:uid=1000,gid=1000,mode=0700
    user: "1000:1000"
`
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(composeFile), 0o644); err != nil {
		t.Fatal(err)
	}
	project := testbed.Project(t, dir)

	if out, err := testbed.Compose(t, dir, project, "up", "-d").CombinedOutput(); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	out, err := testbed.Compose(t, dir, project, "port", "app", "8080").Output()
	if err != nil {
		t.Fatalf("compose port: %v", err)
	}
	base := "http://" + strings.TrimSpace(string(out))
	if _, body := testbed.HTTPGet(t, base+"/env/DSO_TESTBED_Y"); body != "canary-value-2" {
		t.Errorf("GET /env/DSO_TESTBED_Y = %q, want canary-value-2", body)
	}
	if _, body := testbed.HTTPGet(t, base+"/stat?path=/run/secrets"); body != "1000 1000 700" {
		t.Errorf("GET /stat of the tmpfs = %q, want \"1000 1000 700\"", body)
	}

	if out, err := testbed.Compose(t, dir, project, "down").CombinedOutput(); err != nil {
		t.Fatalf("compose down: %v\n%s", err, out)
	}
	left, err := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", "com.docker.compose.project="+project),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Items) != 0 {
		t.Errorf("%d containers left after compose down", len(left.Items))
	}
}

func TestGoBinaryIsCached(t *testing.T) {
	a := testbed.GoBinary(t, "./test/testapp")
	b := testbed.GoBinary(t, "./test/testapp")
	if a != b {
		t.Errorf("GoBinary built twice: %s, %s", a, b)
	}
	if _, err := os.Stat(filepath.Join(testbed.RepoRoot(), "go.mod")); err != nil {
		t.Errorf("RepoRoot %s has no go.mod: %v", testbed.RepoRoot(), err)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // generous: a loaded machine is slow
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
