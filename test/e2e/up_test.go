package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/testbed"
)

// serviceContainers returns the IDs of the containers of a service,
// running or not.
func serviceContainers(t *testing.T, project, service string) []string {
	t.Helper()
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project).Add("label", "com.docker.compose.service="+service)
	list, err := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(list.Items))
	for _, c := range list.Items {
		ids = append(ids, c.ID)
	}
	return ids
}

// serviceContainer returns the ID of the one container of a service.
func serviceContainer(t *testing.T, project, service string) string {
	t.Helper()
	ids := serviceContainers(t, project, service)
	if len(ids) != 1 {
		t.Fatalf("service %s of %s has %d containers, want 1", service, project, len(ids))
	}
	return ids[0]
}

// inspect returns what the engine says of a container now.
func inspect(t *testing.T, id string) container.InspectResponse {
	t.Helper()
	r, err := testbed.Docker(t).ContainerInspect(t.Context(), id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Container
}

// get asks the testapp behind addr and requires status 200.
func get(t *testing.T, addr, path string) string {
	t.Helper()
	status, body := testbed.HTTPGet(t, "http://"+addr+path)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", path, status, body)
	}
	return body
}

// eventually retries get until it returns want (a container restarting).
func eventually(t *testing.T, addr, path, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		status, body := testbed.HTTPGet(t, "http://"+addr+path)
		if status == http.StatusOK && body == want {
			return
		}
		last = fmt.Sprintf("status %d, %d bytes", status, len(body))
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("GET %s never returned the expected value (last: %s)", path, last)
}

// TestUpDeliversEnvAndFiles is the main job: env and file references, a
// FROM scratch image run as a non-root user, then docker restart and a crash
// under restart: always, then a leak scan of every surface.
func TestUpDeliversEnvAndFiles(t *testing.T) {
	u := newUser(t)
	dbValue := canary(t, "db")
	fileValue := append(canary(t, "file"), "\nsecond line  \n"...)
	image := testbed.TestappImage(t)
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  web:
    image: ` + image + `
    user: "1000:1000"
    restart: always
    ports: ["127.0.0.1::8080"]
    environment:
      DB_PASSWORD: dso://db_password
      TLS_KEY_FILE: dsofile://shop/tls_key
      PLAIN: plain-value
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{project + "/db_password": dbValue, "shop/tls_key": fileValue})

	up := u.must(dir, nil, "dso", "up", "-p", project, "-d")
	id := serviceContainer(t, project, "web")
	addr := serviceAddr(t, project, "web")

	if got := get(t, addr, "/env/DB_PASSWORD"); got != string(dbValue) {
		t.Errorf("DB_PASSWORD: got %d bytes, not the secret", len(got))
	}
	if got := get(t, addr, "/env/PLAIN"); got != "plain-value" {
		t.Errorf("PLAIN = %q", got)
	}
	path := get(t, addr, "/env/TLS_KEY_FILE")
	if path != "/run/dso/secrets/TLS_KEY_FILE" {
		t.Errorf("TLS_KEY_FILE = %q, want the file's path", path)
	}
	if got := get(t, addr, "/file?path="+path); got != string(fileValue) {
		t.Errorf("file content differs from the secret (%d bytes)", len(got))
	}
	if got := get(t, addr, "/stat?path="+path); got != "1000 1000 400" {
		t.Errorf("file owner and mode = %q, want 1000 1000 400", got)
	}
	if got := get(t, addr, "/id"); got != "1000 1000" {
		t.Errorf("app runs as %q, want 1000 1000", got)
	}
	if got := strings.TrimSpace(get(t, addr, "/args")); got != `["/testapp"]` {
		t.Errorf("app argv = %s, want the image's entrypoint unchanged", got)
	}

	// servedAgain checks, after a start of the same container, that the
	// app sees both secrets again, the file with its owner and mode.
	servedAgain := func(after string) {
		t.Helper()
		addr = serviceAddr(t, project, "web")
		eventually(t, addr, "/env/DB_PASSWORD", string(dbValue))
		if got := get(t, addr, "/file?path="+path); got != string(fileValue) {
			t.Errorf("after %s: the file differs from the secret (%d bytes)", after, len(got))
		}
		if got := get(t, addr, "/stat?path="+path); got != "1000 1000 400" {
			t.Errorf("after %s: file owner and mode = %q, want 1000 1000 400", after, got)
		}
	}

	// docker restart: the agent delivers again.
	first := inspect(t, id).State.StartedAt
	if _, err := testbed.Docker(t).ContainerRestart(t.Context(), id, client.ContainerRestartOptions{}); err != nil {
		t.Fatal(err)
	}
	restarted := inspect(t, id).State.StartedAt
	if restarted == first {
		t.Fatalf("docker restart did not start the container again (started at %s both times)", first)
	}
	servedAgain("docker restart")

	// A crash under restart: always: the engine starts the same container
	// again (its restart count goes up, its start time moves on), and the
	// agent delivers to it again.
	before := inspect(t, id)
	testbed.HTTPGet(t, "http://"+addr+"/exit?code=3")
	waitFor(t, "the engine to restart the crashed container", func() bool {
		now := inspect(t, id)
		return now.State.Running && now.RestartCount > before.RestartCount && now.State.StartedAt != before.State.StartedAt
	})
	if after := inspect(t, id); after.RestartCount != before.RestartCount+1 {
		t.Errorf("restart count went from %d to %d after one crash, want one more", before.RestartCount, after.RestartCount)
	}
	servedAgain("a crash under restart: always")

	logs := u.must(dir, nil, "dso", "logs", "-p", project)
	ps := u.must(dir, nil, "dso", "ps", "-p", project)
	if !strings.Contains(ps.stdout, "web") {
		t.Errorf("docker dso ps does not list the service:\n%s", ps.stdout)
	}
	assertNoLeak(t, u, [][]byte{dbValue, fileValue}, up.output(), logs.output(), ps.output())
}

// TestEntrypointScriptSeesEnvAtStart checks that a shell entrypoint sees the
// secret in its first instruction: no race, nothing to wait for.
func TestEntrypointScriptSeesEnvAtStart(t *testing.T) {
	u := newUser(t)
	value := canary(t, "script")
	base := testbed.BusyboxImage(t)
	image := testbed.BuildImage(t, "entry", map[string]string{}, "FROM "+base+"\n"+
		`RUN printf '#!/bin/sh\nmkdir -p /tmp/www\nprintf "%%s" "$TOKEN" | sha256sum | cut -d" " -f1 > /tmp/www/sum\nexec httpd -f -p 8080 -h /tmp/www\n' > /entry.sh && chmod +x /entry.sh`+"\n"+
		`ENTRYPOINT ["/entry.sh"]`+"\n")
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  script:
    image: ` + image + `
    ports: ["127.0.0.1::8080"]
    environment:
      TOKEN: dso://app/token
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/token": value})
	up := u.must(dir, nil, "dso", "up", "-p", project, "-d")
	sum := sha256.Sum256(value)
	got := strings.TrimSpace(get(t, serviceAddr(t, project, "script"), "/sum"))
	if got != hex.EncodeToString(sum[:]) {
		t.Errorf("the entrypoint script saw another TOKEN at start (sha256 %s)", got)
	}
	assertNoLeak(t, u, [][]byte{value}, up.output())
}

// TestUpRefusesBadReferences checks that a missing secret or a malformed
// reference stops up before anything is created, naming what to fix.
func TestUpRefusesBadReferences(t *testing.T) {
	u := newUser(t)
	image := testbed.TestappImage(t)
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + image + `
    environment:
      DB_PASSWORD: dso://app/db_password
  worker:
    image: ` + image + `
    environment:
      BROKEN: dso://app//double
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/other": []byte("x")})

	r := u.run(dir, nil, "dso", "up", "-p", project, "-d")
	if r.code != 4 {
		t.Errorf("exit code %d, want 4 (secret or reference error)\n%s", r.code, r.output())
	}
	for _, want := range []string{"compose.yaml: ", `service "worker", variable BROKEN`, "dso://app//double", "empty path segment"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("error does not say %q:\n%s", want, r.stderr)
		}
	}
	// Fix the malformed one: the missing secret is reported with its fix.
	dir2 := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + image + `
    environment:
      DB_PASSWORD: dso://app/db_password
`})
	r = u.run(dir2, nil, "dso", "up", "-p", project, "-d")
	if r.code != 4 {
		t.Errorf("exit code %d, want 4\n%s", r.code, r.output())
	}
	for _, want := range []string{`service "api", variable DB_PASSWORD`, "dso://app/db_password", "not found", "docker dso secret set app/db_password"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("error does not say %q:\n%s", want, r.stderr)
		}
	}
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project)
	list, err := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("a failed up created %d containers", len(list.Items))
	}
}

// TestDryRunShowsPlanWithoutValues checks --dry-run: the plan, no value,
// nothing created.
func TestDryRunShowsPlanWithoutValues(t *testing.T) {
	u := newUser(t)
	value := canary(t, "dry")
	image := testbed.TestappImage(t)
	dir := writeProject(t, map[string]string{"compose.yaml": `
services:
  api:
    image: ` + image + `
    environment:
      DB_PASSWORD: dso://app/db_password
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"app/db_password": value})
	r := u.must(dir, nil, "dso", "up", "-p", project, "-d", "--dry-run")
	for _, want := range []string{"DB_PASSWORD", "dso://app/db_password", "<redacted>", "/.dso/init"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("plan does not show %q:\n%s", want, r.stdout)
		}
	}
	f := client.Filters{}.Add("label", "com.docker.compose.project="+project)
	list, _ := testbed.Docker(t).ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: f})
	if len(list.Items) != 0 {
		t.Errorf("--dry-run created %d containers", len(list.Items))
	}
	assertNoLeak(t, u, [][]byte{value}, r.output())
}

// TestDryRunWithoutSecretsRunsNothing: on a project where no service takes
// secrets, --dry-run says so and prints what compose would be asked, and
// neither builds, pulls nor creates anything.
func TestDryRunWithoutSecretsRunsNothing(t *testing.T) {
	u := newUser(t)
	image := "dso-e2e-dryrun-" + hex.EncodeToString(canary(t, "img")[len("dso-canary-img-"):][:8])
	dir := writeProject(t, map[string]string{
		"compose.yaml": "services:\n  plain:\n    image: " + image + "\n    build: .\n    environment:\n      PLAIN: value\n",
		"Dockerfile":   "FROM scratch\nCOPY Dockerfile /\n",
	})
	project := testbed.Project(t, dir)
	r := u.must(dir, nil, "dso", "up", "-p", project, "-d", "--build", "--dry-run")
	for _, want := range []string{"no service takes secrets", "docker compose --project-name " + project, " up -d --build"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the dry run does not say %q:\n%s", want, r.output())
		}
	}
	if ids := serviceContainers(t, project, "plain"); len(ids) != 0 {
		t.Errorf("--dry-run created %d containers", len(ids))
	}
	if _, err := testbed.Docker(t).ImageInspect(t.Context(), image); err == nil {
		testbed.Docker(t).ImageRemove(t.Context(), image, client.ImageRemoveOptions{Force: true})
		t.Errorf("--dry-run built the image %s", image)
	}
}

// TestLabelFormWithMappings: the seed's form, dso.secrets labels naming
// dso.yaml secrets whose mappings give the variables, env and file.
func TestLabelFormWithMappings(t *testing.T) {
	u := newUser(t)
	root, app := canary(t, "root"), canary(t, "app")
	dir := writeProject(t, map[string]string{
		"compose.yaml": `
services:
  mysql:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    labels:
      dso.reloader: "true"
      dso.secrets: "database_credentials,tls"
    environment:
      MYSQL_ROOT_PASSWORD: ""
`,
		"dso.yaml": `
version: v1.0.0
mode: local
providers:
  local:
    type: local
secrets:
  - name: database_credentials
    provider: local
    mappings:
      MYSQL_ROOT_PASSWORD: prod/mysql/root_password
  - name: tls
    inject: {type: file}
    mappings:
      MYSQL_APP_PASSWORD_FILE: prod/mysql/app_password
`})
	project := testbed.Project(t, dir)
	u.initVault(map[string][]byte{"prod/mysql/root_password": root, "prod/mysql/app_password": app})
	up := u.must(dir, nil, "dso", "up", "-p", project, "-d", "--wait")
	id := serviceContainer(t, project, "mysql")
	// --wait returned: the agent has already delivered to the container.
	if st := u.must(dir, nil, "dso", "status", "--json"); !strings.Contains(st.stdout, `"id": "`+id[:12]+`"`) {
		t.Errorf("up --wait returned before the delivery:\n%s", st.stdout)
	}
	addr := serviceAddr(t, project, "mysql")
	if got := get(t, addr, "/env/MYSQL_ROOT_PASSWORD"); got != string(root) {
		t.Errorf("MYSQL_ROOT_PASSWORD: %d bytes, not the secret", len(got))
	}
	if got := get(t, addr, "/file?path="+get(t, addr, "/env/MYSQL_APP_PASSWORD_FILE")); got != string(app) {
		t.Errorf("the mapped file does not hold the secret (%d bytes)", len(got))
	}
	assertNoLeak(t, u, [][]byte{root, app}, up.output())
}
