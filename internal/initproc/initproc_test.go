package initproc

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPayloadValidate(t *testing.T) {
	good := &Payload{Env: map[string][]byte{"DB_PASSWORD": []byte("x\ny  ")}, Files: map[string][]byte{"TLS_KEY": {0, 1, 2}}, Signal: "HUP"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (&Payload{Refused: "not registered with the dso agent"}).Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []*Payload{
		{Env: map[string][]byte{"1X": nil}},
		{Env: map[string][]byte{"X": []byte("a\x00b")}},
		{Files: map[string][]byte{"../escape": nil}},
		{Files: map[string][]byte{"a/b": nil}},
		{Signal: "SIGNOPE"},
		{Files: map[string][]byte{"A": nil}, Perms: map[string]FilePerm{"B": DefaultPerm}},
		{Files: map[string][]byte{"A": nil}, Perms: map[string]FilePerm{"A": {UID: -2, GID: 0, Mode: 0o400}}},
		{Files: map[string][]byte{"A": nil}, Perms: map[string]FilePerm{"A": {UID: 0, GID: 1 << 31, Mode: 0o400}}},
		{Files: map[string][]byte{"A": nil}, Perms: map[string]FilePerm{"A": {UID: 0, GID: 0, Mode: 0o4755}}},
		{Waiting: "late", Env: map[string][]byte{"X": []byte("a\x00b")}},
		{Waiting: strings.Repeat("x", MaxWaiting+1)},
		{Refused: "not registered", Env: map[string][]byte{"X": []byte("1")}},
		{Refused: "line\nbreak"},
		{Refused: strings.Repeat("x", maxRefused+1)},
	}
	for _, p := range bad {
		err := p.Validate()
		if err == nil {
			t.Errorf("%+v accepted", p)
		} else if strings.Contains(err.Error(), "a\x00b") {
			t.Errorf("error shows the value: %v", err)
		}
	}
}

func TestDigestIgnoresOrderAndSignal(t *testing.T) {
	a := &Payload{Env: map[string][]byte{"A": []byte("1"), "B": []byte("2")}, Signal: "SIGHUP"}
	b := &Payload{Env: map[string][]byte{"B": []byte("2"), "A": []byte("1")}}
	if a.Digest() != b.Digest() {
		t.Error("same secrets, different digests")
	}
	c := &Payload{Env: map[string][]byte{"A": []byte("1"), "B": []byte("3")}}
	if a.Digest() == c.Digest() {
		t.Error("a changed value keeps the digest")
	}
	d := &Payload{Files: map[string][]byte{"A": []byte("1"), "B": []byte("2")}}
	if a.Digest() == d.Digest() {
		t.Error("env and files with the same content share a digest")
	}
	e := &Payload{Files: d.Files, Perms: map[string]FilePerm{"A": {UID: -1, GID: 70, Mode: 0o440}}}
	if d.Digest() == e.Digest() {
		t.Error("a new owner or mode keeps the digest: the rotation would not apply it")
	}
}

func TestMergeEnvReplaces(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "DB=dso://app/db", "X=1"}, map[string][]byte{"DB": []byte("v")})
	slices.Sort(got)
	if strings.Join(got, ",") != "DB=v,PATH=/bin,X=1" {
		t.Errorf("got %q", got)
	}
}

func TestWriteFilesAtomicOwnedAndPruned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	if err := writeFiles(dir, map[string][]byte{"A": []byte("one"), "B": []byte("two")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(dir, map[string][]byte{"A": []byte("uno")}, nil); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "A"))
	if err != nil || string(b) != "uno" {
		t.Errorf("A = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "B")); !os.IsNotExist(err) {
		t.Errorf("B was not removed: %v", err)
	}
	st, _ := os.Stat(filepath.Join(dir, "A"))
	if st.Mode().Perm() != 0o400 {
		t.Errorf("mode %v, want 0400", st.Mode().Perm())
	}
	dst, _ := os.Stat(dir)
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", dst.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestWriteFilesOwnerAndMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	gid := os.Getgid()
	if os.Geteuid() == 0 {
		gid = 70 // root may give a file to any group
	}
	perms := map[string]FilePerm{"KEY": {UID: -1, GID: gid, Mode: 0o440}}
	if err := writeFiles(dir, map[string][]byte{"KEY": []byte("k"), "OTHER": []byte("o")}, perms); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		uid, gid int
		mode     os.FileMode
	}{
		{"KEY", os.Geteuid(), gid, 0o440},
		{"OTHER", os.Geteuid(), os.Getegid(), 0o400},
	} {
		fi, err := os.Stat(filepath.Join(dir, tt.name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != tt.uid || int(st.Gid) != tt.gid || fi.Mode().Perm() != tt.mode {
			t.Errorf("%s: %d:%d %v, want %d:%d %v", tt.name, st.Uid, st.Gid, fi.Mode().Perm(), tt.uid, tt.gid, tt.mode)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o711 {
		t.Errorf("dir mode %v, want 0711: the owner of a file must be able to reach it", fi.Mode().Perm())
	}
	// Back to the defaults: the directory closes again.
	if err := writeFiles(dir, map[string][]byte{"KEY": []byte("k2")}, nil); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "KEY")); fi.Mode().Perm() != 0o400 {
		t.Errorf("KEY mode %v after a delivery with no perms, want 0400", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", fi.Mode().Perm())
	}
}

func TestCheckTmpfsRefusesDisk(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs(".", &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skip("the source tree is on a tmpfs here")
	}
	err := checkTmpfs(".")
	if err == nil || !strings.Contains(err.Error(), "not a tmpfs") {
		t.Errorf("a directory on disk: %v, want a refusal", err)
	}
	if err := unix.Statfs("/dev/shm", &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		if err := checkTmpfs("/dev/shm"); err != nil {
			t.Errorf("/dev/shm refused: %v", err)
		}
	}
}

// TestDeliverProtocol runs both ends of the socket: the answer of the init
// reaches the deliverer, and a malformed payload is refused.
func TestDeliverProtocol(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "init.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan delivery, 1)
	go acceptLoop(ln, got)
	go func() {
		d := <-got
		if string(d.payload.Env["A"]) != "secret-a" {
			d.reply(errTest)
			return
		}
		d.reply(nil)
	}()
	payload, _ := json.Marshal(Payload{Env: map[string][]byte{"A": []byte("secret-a")}})
	if err := Deliver(bytes.NewReader(payload), sock, time.Second); err != nil {
		t.Fatalf("deliver: %v", err)
	}
	err = Deliver(strings.NewReader("{not json"), sock, time.Second)
	if err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("malformed payload: %v", err)
	}
	if err := Deliver(strings.NewReader("{}"), filepath.Join(t.TempDir(), "none.sock"), 100*time.Millisecond); err == nil {
		t.Error("no init listening, yet delivered")
	}
}

var errTest = os.ErrInvalid

// TestWaitingMessageNamesTheCause runs the init with a short deadline: the
// agent's waiting message is logged at once, and the message at the
// deadline names that cause instead of asking whether the agent runs.
func TestWaitingMessageNamesTheCause(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "dso-init-test-")
	if err != nil {
		t.Skip("no /dev/shm tmpfs here")
	}
	defer os.RemoveAll(dir)
	var stderr syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- Supervise(Options{Argv: []string{"/bin/true"}, Timeout: 2 * time.Second, RunDir: dir, Stderr: &stderr})
	}()
	why := `provider "vault": secret "app/db": backend unreachable`
	msg, _ := json.Marshal(Payload{Waiting: why})
	if err := Deliver(bytes.NewReader(msg), filepath.Join(dir, "init.sock"), 2*time.Second); err != nil {
		t.Fatalf("waiting message refused: %v", err)
	}
	if got := <-code; got != ExitNoDelivery {
		t.Fatalf("exit code %d, want %d", got, ExitNoDelivery)
	}
	out := stderr.String()
	for _, want := range []string{"waiting for secrets: the dso agent cannot get them yet: " + why, "no secrets delivered within 2s: the dso agent could not get them: " + why} {
		if !strings.Contains(out, want) {
			t.Errorf("init output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "is the dso agent running") {
		t.Errorf("the init still blames a missing agent:\n%s", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestParseArgs(t *testing.T) {
	d, argv, err := ParseArgs([]string{"--timeout", "90s", "--", "app", "-x"})
	if err != nil || d != 90*time.Second || strings.Join(argv, " ") != "app -x" {
		t.Fatalf("ParseArgs = %s, %q, %v", d, argv, err)
	}
	if d, _, _ := ParseArgs([]string{"--", "app"}); d != DefaultTimeout {
		t.Fatalf("default timeout %s, want %s", d, DefaultTimeout)
	}
	if _, _, err := ParseArgs([]string{"--timeout", "soon", "--", "app"}); err == nil {
		t.Fatal("a bad --timeout accepted")
	}
}

func FuzzReadPayload(f *testing.F) {
	f.Add([]byte(`{"env":{"A":"eA=="},"files":{"F":"AA=="},"signal":"SIGHUP"}`))
	f.Add([]byte(`{"env":{"1":"AA=="}}`))
	f.Add([]byte(`{"bogus":1}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ReadPayload(bytes.NewReader(data))
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("ReadPayload accepted an invalid payload: %v", err)
		}
		p.Digest()
	})
}
