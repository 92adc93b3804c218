package secretcmd_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// bin is the docker-dso binary built once for these tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dso-secretcmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "docker-dso")
	build := exec.Command("go", "build", "-o", bin, "github.com/dso-project/dso/cmd/docker-dso")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build docker-dso:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Canaries are secret values: no output or error may ever show them, except
// the stdout of `secret get`.
const (
	canary  = "CANARY-secretcmd-4e1b7d"
	canary2 = "CANARY-secretcmd-second-90ac"
)

// home is a user's home directory for one test.
type home struct {
	t   *testing.T
	dir string
	env []string // extra variables
}

func newHome(t *testing.T) *home {
	return &home{t: t, dir: t.TempDir()}
}

func (h *home) vault() string { return filepath.Join(h.dir, ".dso", "vault.enc") }
func (h *home) key() string   { return filepath.Join(h.dir, ".dso", "master.key") }

type result struct {
	stdout, stderr string
	code           int
}

// cmd prepares docker-dso with args, HOME set to the test's home and a clean
// environment (no DSO_* variables from outside).
func (h *home) cmd(stdin []byte, args ...string) *exec.Cmd {
	c := exec.Command(bin, args...)
	c.Env = append([]string{"HOME=" + h.dir, "PATH=" + os.Getenv("PATH")}, h.env...)
	c.Stdin = bytes.NewReader(stdin)
	return c
}

func (h *home) run(stdin []byte, args ...string) result {
	h.t.Helper()
	c := h.cmd(stdin, args...)
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	r := result{stdout: out.String(), stderr: errOut.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("run docker-dso %s: %v", strings.Join(args, " "), err)
	}
	isGet := slices.Contains(args, "get")
	for _, c := range []string{canary, canary2, "line2  "} {
		if strings.Contains(r.stderr, c) || (!isGet && strings.Contains(r.stdout, c)) {
			h.t.Fatalf("docker-dso %s printed a secret value:\nstdout: %q\nstderr: %q", strings.Join(args, " "), r.stdout, r.stderr)
		}
	}
	return r
}

// ok runs a command that must succeed.
func (h *home) ok(stdin []byte, args ...string) result {
	h.t.Helper()
	r := h.run(stdin, args...)
	if r.code != 0 {
		h.t.Fatalf("docker-dso %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// fails runs a command that must exit with code and print want on stderr.
func (h *home) fails(code int, want string, stdin []byte, args ...string) result {
	h.t.Helper()
	r := h.run(stdin, args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		h.t.Fatalf("docker-dso %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), r.code, r.stderr, code, want)
	}
	return r
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInitCreatesPrivateFiles(t *testing.T) {
	h := newHome(t)
	h.ok(nil, "init")
	for path, want := range map[string]os.FileMode{
		filepath.Dir(h.vault()): 0o700 | os.ModeDir,
		h.vault():               0o600,
		h.key():                 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(readFile(t, h.key()))))
	if err != nil || len(raw) != 32 {
		t.Errorf("key file does not hold 32 bytes of base64: %v", err)
	}
}

func TestInitTwiceRefuses(t *testing.T) {
	h := newHome(t)
	h.ok(nil, "init")
	h.ok([]byte(canary), "secret", "set", "app/one")
	vault, key := readFile(t, h.vault()), readFile(t, h.key())
	h.fails(5, "already exists", nil, "init")
	h.env = []string{"DSO_PASSPHRASE=a long passphrase"}
	h.fails(5, "already exists", nil, "init", "--passphrase")
	if !bytes.Equal(vault, readFile(t, h.vault())) || !bytes.Equal(key, readFile(t, h.key())) {
		t.Error("a refused init changed the vault or the key file")
	}
}

func TestSetGetExactBytes(t *testing.T) {
	h := newHome(t)
	h.ok(nil, "init")
	value := []byte("line1\nline2  \n")
	h.ok(value, "secret", "set", "app/multi")
	if got := h.ok(nil, "secret", "get", "app/multi").stdout; got != string(value) {
		t.Errorf("get = %q, want %q", got, value)
	}
	binary := append([]byte{0, 0xff, '\r', '\n', ' '}, canary...)
	h.ok(binary, "secret", "set", "app/binary")
	if got := h.ok(nil, "secret", "get", "app/binary").stdout; got != string(binary) {
		t.Errorf("get of a binary value = %q, want %q", got, binary)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // exactly 1 MiB
	h.ok(big, "secret", "set", "app/big")
	if got := h.ok(nil, "secret", "get", "app/big").stdout; got != string(big) {
		t.Errorf("get of a 1 MiB value returned %d bytes", len(got))
	}

	data := readFile(t, h.vault())
	for _, v := range [][]byte{[]byte("line2  "), []byte(canary), big[:64]} {
		if bytes.Contains(data, v) {
			t.Errorf("vault.enc holds the plaintext %q", v)
		}
	}
	list := h.ok(nil, "secret", "list").stdout
	for _, name := range []string{"app/multi", "app/binary", "app/big"} {
		if !strings.Contains(list, name) {
			t.Errorf("list does not show %s:\n%s", name, list)
		}
	}
	var entries []struct {
		Name    string `json:"name"`
		Version uint64 `json:"version"`
		Updated string `json:"updated"`
	}
	out := h.ok(nil, "secret", "list", "--json").stdout
	if err := json.Unmarshal([]byte(out), &entries); err != nil || len(entries) != 3 {
		t.Fatalf("list --json = %q: %v", out, err)
	}
	for _, e := range entries {
		if e.Version != 1 || e.Updated == "" {
			t.Errorf("list --json entry %+v", e)
		}
	}

	h.ok([]byte(canary2), "secret", "set", "app/multi")
	for _, line := range strings.Split(h.ok(nil, "secret", "list").stdout, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "app/multi" && f[1] != "2" {
			t.Errorf("after a second set: %q, want version 2", line)
		}
	}
}

func TestTooLargeOrEmptyChangesNothing(t *testing.T) {
	h := newHome(t)
	h.ok(nil, "init")
	before := readFile(t, h.vault())
	h.fails(1, "1 MiB", bytes.Repeat([]byte{'x'}, 1<<20+1), "secret", "set", "app/big")
	h.fails(1, "empty value", nil, "secret", "set", "app/empty")
	h.fails(4, "invalid secret name", []byte(canary), "secret", "set", "no-project")
	h.fails(4, "no reference could reach", []byte(canary), "secret", "set", "a/b#")
	h.fails(4, "no reference could reach", []byte(canary), "secret", "set", "a/b?provider=x")
	h.fails(4, "longer than 4096 bytes", []byte(canary), "secret", "set", "app/"+strings.Repeat("x", 4093))
	h.fails(2, "needs 1 argument", []byte(canary), "secret", "set")
	h.fails(2, "unknown command", nil, "secret", "frobnicate")
	h.fails(2, "unknown flag", nil, "secret", "list", "--yaml")
	if !bytes.Equal(before, readFile(t, h.vault())) {
		t.Error("a refused set changed the vault")
	}
}

func TestMissingVaultAndSecret(t *testing.T) {
	h := newHome(t)
	h.fails(5, "docker dso init", nil, "secret", "get", "app/db")
	h.fails(5, "docker dso init", []byte(canary), "secret", "set", "app/db")
	h.fails(5, "docker dso init", nil, "secret", "list")
	if _, err := os.Stat(filepath.Dir(h.vault())); err == nil {
		t.Error("a secret command created ~/.dso")
	}
	h.ok(nil, "init")
	h.fails(4, "docker dso secret set app/db", nil, "secret", "get", "app/db")
	h.fails(4, `"app/db"`, nil, "secret", "rm", "app/db")
	h.ok([]byte(canary), "secret", "set", "app/db")
	h.ok(nil, "secret", "rm", "app/db")
	h.fails(4, "docker dso secret set app/db", nil, "secret", "get", "app/db")
}

func TestWrongKey(t *testing.T) {
	h := newHome(t)
	h.ok(nil, "init")
	h.ok([]byte(canary), "secret", "set", "app/db")
	before := readFile(t, h.vault())
	h.env = []string{"DSO_MASTER_KEY=" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))}
	h.fails(5, "wrong key", nil, "secret", "get", "app/db")
	h.fails(5, "wrong key", []byte(canary2), "secret", "set", "app/db")
	h.env = []string{"DSO_MASTER_KEY=not-base64!"}
	h.fails(5, "DSO_MASTER_KEY", nil, "secret", "get", "app/db")
	if !bytes.Equal(before, readFile(t, h.vault())) {
		t.Error("a wrong key changed the vault")
	}
	// DSO_MASTER_KEY with the right key works without the key file.
	h.env = []string{"DSO_MASTER_KEY=" + string(readFile(t, h.key()))}
	os.Remove(h.key())
	if got := h.ok(nil, "secret", "get", "app/db").stdout; got != canary {
		t.Error("DSO_MASTER_KEY did not open the vault")
	}
}

func TestFlippedByteIsIntegrityError(t *testing.T) {
	h := newHome(t)
	h.ok(nil, "init")
	h.ok([]byte(canary), "secret", "set", "app/db")
	orig := readFile(t, h.vault())
	for _, i := range []int{9, 30, len(orig) - 20, len(orig) - 1} {
		damaged := bytes.Clone(orig)
		damaged[i] ^= 0x10
		if err := os.WriteFile(h.vault(), damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		h.fails(5, "integrity", nil, "secret", "get", "app/db")
		h.fails(5, "integrity", []byte(canary2), "secret", "set", "app/other")
		h.fails(5, "integrity", nil, "secret", "rm", "app/db")
		h.fails(5, "integrity", nil, "secret", "list")
		if !bytes.Equal(damaged, readFile(t, h.vault())) {
			t.Fatalf("byte %d flipped: the file changed after failed commands", i)
		}
	}
}

func TestConcurrentSets(t *testing.T) {
	h := newHome(t)
	h.ok(nil, "init")
	const n = 50
	var wg sync.WaitGroup
	errs := make([]string, n)
	for i := range n {
		c := h.cmd([]byte(fmt.Sprintf("%s-%d", canary, i)), "secret", "set", fmt.Sprintf("app/s%02d", i))
		var errOut bytes.Buffer
		c.Stderr = &errOut
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := c.Wait(); err != nil {
				errs[i] = fmt.Sprintf("set app/s%02d: %v: %s", i, err, errOut.String())
			}
		})
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Error(e)
		}
	}
	var entries []struct{ Name string }
	if err := json.Unmarshal([]byte(h.ok(nil, "secret", "list", "--json").stdout), &entries); err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Errorf("%d secrets after %d concurrent sets, want %d", len(entries), n, n)
	}
	for i := range n {
		want := fmt.Sprintf("%s-%d", canary, i)
		if got := h.ok(nil, "secret", "get", fmt.Sprintf("app/s%02d", i)).stdout; got != want {
			t.Errorf("app/s%02d = %q, want %q", i, got, want)
		}
	}
}

func TestPassphraseVault(t *testing.T) {
	h := newHome(t)
	h.fails(5, "DSO_PASSPHRASE", nil, "init", "--passphrase")
	h.env = []string{"DSO_PASSPHRASE=short"}
	h.fails(5, "shorter than 8", nil, "init", "--passphrase")
	h.env = []string{"DSO_PASSPHRASE=correct horse battery staple"}
	h.ok(nil, "init", "--passphrase")
	if _, err := os.Stat(h.key()); err == nil {
		t.Error("init --passphrase wrote a key file")
	}
	h.ok([]byte(canary), "secret", "set", "app/db")
	if got := h.ok(nil, "secret", "get", "app/db").stdout; got != canary {
		t.Errorf("get = %q", got)
	}
	h.env = []string{"DSO_PASSPHRASE=wrong horse battery staple"}
	h.fails(5, "wrong key", nil, "secret", "get", "app/db")
	h.env = nil
	h.fails(5, "DSO_PASSPHRASE", nil, "secret", "get", "app/db")
}

func TestPathsFromEnvAndFlags(t *testing.T) {
	h := newHome(t)
	dir := t.TempDir()
	vault, key := filepath.Join(dir, "v", "vault.enc"), filepath.Join(dir, "k", "master.key")
	h.env = []string{"DSO_VAULT_FILE=" + vault, "DSO_MASTER_KEY_FILE=" + key}
	h.ok(nil, "init")
	h.ok([]byte(canary), "secret", "set", "app/db")
	for _, p := range []string{vault, key} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := os.Stat(h.vault()); err == nil {
		t.Error("the vault was created in HOME despite DSO_VAULT_FILE")
	}
	h.env = nil
	if got := h.ok(nil, "secret", "--vault-file", vault, "--key-file", key, "get", "app/db").stdout; got != canary {
		t.Errorf("get with flags = %q", got)
	}
}
