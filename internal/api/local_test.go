package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/testbed"
)

// TestMain doubles as a client run under another uid by the peer tests.
func TestMain(m *testing.M) {
	if sock := os.Getenv("DSO_API_TEST_PEER_SOCKET"); sock != "" {
		_, err := NewClient(sock).Status(context.Background())
		switch {
		case err == nil:
			fmt.Print("ok")
		case errors.Is(err, ErrForbidden):
			fmt.Print("forbidden")
		default:
			fmt.Print("error: ", err)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func sampleStatus(context.Context) (Status, error) {
	return Status{
		Agent:      AgentStatus{Health: HealthOK, Mode: "agent"},
		Secrets:    []SecretStatus{{Name: "db", Provider: "aws", Version: "v7"}},
		Containers: []ContainerStatus{{ID: "abc", Service: "web", Secrets: map[string]string{"db": "v7"}}},
		Rotations:  []RotationStatus{{ID: 1, Service: "web", Strategy: "restart", Result: "succeeded"}},
	}, nil
}

func startLocal(t *testing.T, dir string, mod func(*LocalConfig)) (*Local, *recorder, *events.Bus) {
	t.Helper()
	rec, bus := &recorder{}, events.NewBus(10)
	cfg := LocalConfig{Path: filepath.Join(dir, "run", "dso.sock"), Health: okHealth, Status: sampleStatus, Bus: bus, Trigger: rec.trigger}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel = %v", err)
		}
		if _, err := os.Lstat(cfg.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind after shutdown: %v", err)
		}
	})
	return s, rec, bus
}

func TestLocalStatusCheckAndEvents(t *testing.T) {
	s, rec, bus := startLocal(t, t.TempDir(), nil)
	fi, err := os.Stat(s.Path())
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket: %v %v", fi.Mode(), err)
	}
	c := NewClient(s.Path())
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Secrets[0].Version != "v7" || st.Containers[0].Secrets["db"] != "v7" || st.Rotations[0].Result != "succeeded" {
		t.Fatalf("status = %+v", st)
	}
	if err := c.Check(context.Background(), "db"); err != nil || rec.count() != 1 {
		t.Fatalf("check: %v, calls %d", err, rec.count())
	}
	if err := c.Check(context.Background(), "unknown"); err == nil || !strings.Contains(err.Error(), "not watched") {
		t.Fatalf("check of an unknown secret: %v", err)
	}
	bus.Publish(events.Event{Type: events.TypeSecretChange, Secret: "db", Version: "v8"})
	var got []events.Event
	if err := c.Events(context.Background(), 5, false, func(e events.Event) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Version != "v8" {
		t.Fatalf("events = %+v", got)
	}
	if h, err := c.Health(context.Background()); err != nil || h.Health != HealthOK {
		t.Fatalf("health = %+v %v", h, err)
	}
}

func TestLocalSocketSafety(t *testing.T) {
	dir := t.TempDir()
	s, _, _ := startLocal(t, dir, nil)
	// A second agent on the same socket is refused.
	other, _ := NewLocal(LocalConfig{Path: s.Path(), Health: okHealth, Status: sampleStatus, Bus: events.NewBus(1), Trigger: (&recorder{}).trigger})
	if err := other.Listen(); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second listener: %v", err)
	}
	// A regular file is never replaced.
	file := filepath.Join(dir, "not-a-socket")
	os.WriteFile(file, []byte("keep"), 0o600)
	third, _ := NewLocal(LocalConfig{Path: file, Health: okHealth, Status: sampleStatus, Bus: events.NewBus(1), Trigger: (&recorder{}).trigger})
	if err := third.Listen(); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listening over a file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("the file was changed")
	}
	// A stale socket (nobody listening) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	ln, _ := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	ln.SetUnlinkOnClose(false)
	ln.Close()
	startLocal(t, dir, func(c *LocalConfig) { c.Path = stale })
	if _, err := NewLocal(LocalConfig{Path: "/" + strings.Repeat("x", 120), Health: okHealth, Status: sampleStatus, Bus: events.NewBus(1), Trigger: (&recorder{}).trigger}); err == nil {
		t.Fatal("an over-long socket path was accepted")
	}
}

func TestClientSaysAgentNotRunning(t *testing.T) {
	_, err := NewClient(filepath.Join(t.TempDir(), "none.sock")).Status(context.Background())
	if !errors.Is(err, ErrAgentNotRunning) {
		t.Fatalf("err = %v", err)
	}
}

// TestPeerCredentials runs the client as other users against a socket any
// process may connect to, so that SO_PEERCRED is what decides.
func TestPeerCredentials(t *testing.T) {
	testbed.NeedRoot(t, "runs clients as other users")
	dir, err := os.MkdirTemp("", "dso-api-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	exe, _ := os.Executable()
	bin := filepath.Join(dir, "api.test")
	copyFile(t, exe, bin)

	const groupGID = 4242
	s, _, _ := startLocal(t, dir, func(c *LocalConfig) {
		c.Mode = 0o666
		c.Authorize = Authorizer{AgentUID: 0, GroupGID: groupGID}.Allow
	})
	os.Chmod(filepath.Dir(s.Path()), 0o755)

	run := func(cred *syscall.Credential) string {
		cmd := exec.Command(bin)
		cmd.Env = []string{"DSO_API_TEST_PEER_SOCKET=" + s.Path()}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as %+v: %v: %s", cred, err, out)
		}
		return string(out)
	}
	if got := run(&syscall.Credential{Uid: 65534, Gid: 65534}); got != "forbidden" {
		t.Errorf("nobody: %s, want forbidden", got)
	}
	if got := run(&syscall.Credential{Uid: 65534, Gid: groupGID}); got != "ok" {
		t.Errorf("nobody with the group as primary group: %s, want ok", got)
	}
	if got := run(nil); got != "ok" {
		t.Errorf("root: %s, want ok", got)
	}
	// Membership through the user database (supplementary groups).
	uid, gid, ok := memberInGroupFile(t)
	if !ok {
		t.Log("no user listed as a member of a group in /etc/group; supplementary-group case not run")
		return
	}
	s2, _, _ := startLocal(t, dir, func(c *LocalConfig) {
		c.Path = filepath.Join(dir, "s2.sock")
		c.Mode = 0o666
		c.Authorize = Authorizer{AgentUID: 0, GroupGID: int64(gid)}.Allow
	})
	cmd := exec.Command(bin)
	cmd.Env = []string{"DSO_API_TEST_PEER_SOCKET=" + s2.Path()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "ok" {
		t.Errorf("member of group %d by /etc/group: %s %v, want ok", gid, out, err)
	}
}

// memberInGroupFile finds a user named as a member of some group.
func memberInGroupFile(t *testing.T) (uid, gid uint32, ok bool) {
	f, err := os.Open("/etc/group")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ":")
		if len(parts) != 4 || parts[3] == "" {
			continue
		}
		for _, name := range strings.Split(parts[3], ",") {
			u, err := user.Lookup(name)
			if err != nil || u.Uid == "0" {
				continue
			}
			g, _ := strconv.ParseUint(parts[2], 10, 32)
			id, _ := strconv.ParseUint(u.Uid, 10, 32)
			return uint32(id), uint32(g), true
		}
	}
	return 0, 0, false
}

func TestAuthorizerWithRealCredentials(t *testing.T) {
	a := DefaultAuthorizer()
	me := Peer{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if err := a.Allow(me); err != nil {
		t.Fatalf("the agent's own user refused: %v", err)
	}
	stranger := Peer{UID: 65534, GID: 65534}
	a.AgentUID, a.GroupGID = 12345, -1
	if err := a.Allow(stranger); err == nil || !strings.Contains(err.Error(), "65534") {
		t.Fatalf("stranger allowed or unnamed: %v", err)
	}
	if err := a.Allow(Peer{UID: 0}); err != nil {
		t.Fatalf("root refused: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
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
