// Package e2e runs `docker dso` as a user would, through the docker CLI as
// a CLI plugin, against the real Docker engine and real Docker Compose v2,
// and checks what the containers received and that no secret leaked.
package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/testbed"
)

// user is one isolated user of dso: its own HOME (vault, key, local agent),
// its own docker CLI config with the plugins installed as the install
// script installs them, and a PATH whose `docker` records the environment
// of every docker process (compose included) for the leak scans.
type user struct {
	t       *testing.T
	home    string
	records string
	env     []string
}

func newUser(t *testing.T) *user {
	t.Helper()
	testbed.Docker(t)
	realDocker, err := exec.LookPath("docker")
	if err != nil {
		t.Fatalf("docker CLI not on PATH: %v", err)
	}
	home := t.TempDir()
	plugins := filepath.Join(home, ".docker", "cli-plugins")
	bin := filepath.Join(home, "bin")
	records := filepath.Join(home, "records")
	for _, d := range []string{plugins, bin, records} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, testbed.GoBinary(t, "./cmd/docker-dso"), filepath.Join(plugins, "docker-dso"))
	copyFile(t, testbed.GoBinary(t, "./cmd/dso-init"), filepath.Join(plugins, "dso-init"))
	if err := os.Symlink(testbed.ComposeBinary(t), filepath.Join(plugins, "docker-compose")); err != nil {
		t.Fatal(err)
	}
	wrapper := "#!/bin/sh\nenv > \"" + records + "/env.$$\"\nexec " + realDocker + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "HOME", name == "DOCKER_CONFIG", name == "PATH", strings.HasPrefix(name, "DSO_"), strings.HasPrefix(name, "COMPOSE_"):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"), "PATH="+bin+":"+os.Getenv("PATH"))
	u := &user{t: t, home: home, records: records, env: env}
	t.Cleanup(func() { u.run("", nil, "dso", "agent", "stop") })
	return u
}

// result is what one command did.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) output() string { return r.stdout + r.stderr }

// run runs `docker ARGS...` in dir with stdin.
func (u *user) run(dir string, stdin []byte, args ...string) result {
	u.t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = u.env
	cmd.Path = filepath.Join(u.home, "bin", "docker")
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// must runs a command that must succeed.
func (u *user) must(dir string, stdin []byte, args ...string) result {
	u.t.Helper()
	r := u.run(dir, stdin, args...)
	if r.code != 0 {
		u.t.Fatalf("docker %s: exit %d\n%s", strings.Join(args, " "), r.code, r.output())
	}
	return r
}

// initVault creates the user's vault and stores secrets (name -> value).
func (u *user) initVault(secrets map[string][]byte) {
	u.t.Helper()
	u.must("", nil, "dso", "init")
	for name, value := range secrets {
		u.must("", value, "dso", "secret", "set", name)
	}
}

// canaryTimes holds, by test, when its first canary was made: the leak
// scan reads only the files that changed since.
var canaryTimes sync.Map // *testing.T -> time.Time

// firstCanary returns when t made its first canary (zero when none: then
// every file is read).
func firstCanary(t *testing.T) time.Time {
	at, _ := canaryTimes.Load(t)
	at0, _ := at.(time.Time)
	return at0
}

// canary returns a value unique to this run, to search for afterwards.
func canary(t *testing.T, label string) []byte {
	if _, loaded := canaryTimes.LoadOrStore(t, time.Now()); !loaded {
		t.Cleanup(func() { canaryTimes.Delete(t) })
	}
	b := make([]byte, 12)
	rand.Read(b)
	return []byte("dso-canary-" + label + "-" + hex.EncodeToString(b))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// tokenCompose is a compose file running the testapp with TOKEN from
// dso://app/token, its port 8080 published on 127.0.0.1.
func tokenCompose(t *testing.T) string {
	return `
services:
  api:
    image: ` + testbed.TestappImage(t) + `
    ports: ["127.0.0.1::8080"]
    environment:
      TOKEN: dso://app/token
`
}

// writeProject writes files (name -> content) into a new project directory.
func writeProject(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	return dir
}

// writeFiles writes files (name -> content) into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
