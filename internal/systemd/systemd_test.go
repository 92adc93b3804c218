package systemd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/testbed"
)

// fakeRoot makes a directory that groupadd --prefix and systemctl --root
// accept as a system root.
func fakeRoot(t *testing.T) string {
	t.Helper()
	testbed.NeedRoot(t, "bootstrap sets root ownership")
	for _, tool := range []string{"groupadd", "systemctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			testbed.Unavailable(t, "%s is not installed (scripts/tools/systemd.sh installs it)", tool)
		}
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	for name, content := range map[string]string{"group": "root:x:0:\n", "gshadow": "root:*::\n", "passwd": "root:x:0:0:root:/root:/bin/sh\n", "shadow": "root:*:1::::::\n"} {
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func stat(t *testing.T, path string) (os.FileMode, uint32, uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), st.Uid, st.Gid
}

func TestBootstrapCreatesTheInstall(t *testing.T) {
	root := fakeRoot(t)
	steps, err := Bootstrap(context.Background(), BootstrapOptions{Root: root, Provider: "aws", Binary: "/usr/local/lib/docker/cli-plugins/docker-dso"})
	if err != nil {
		t.Fatal(err)
	}
	gid, found, err := lookupGroup(root, GroupName)
	if err != nil || !found {
		t.Fatalf("group dso not in %s/etc/group: %v", root, err)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
		gid  uint32
	}{
		{ConfigDir, os.ModeDir | 0o775, uint32(gid)},
		{ConfigFile, 0o664, uint32(gid)},
		{RunDir, os.ModeDir | 0o750, uint32(gid)},
		{StateDir, os.ModeDir | 0o700, 0},
		{UnitFile, 0o644, 0},
	} {
		mode, uid, g := stat(t, filepath.Join(root, c.path))
		if mode != c.mode || uid != 0 || g != c.gid {
			t.Errorf("%s: %v %d:%d, want %v 0:%d", c.path, mode, uid, g, c.mode, c.gid)
		}
	}
	link := filepath.Join(root, "/etc/systemd/system/multi-user.target.wants", UnitName)
	if target, err := os.Readlink(link); err != nil || target != UnitFile {
		t.Errorf("unit not enabled: %q %v", target, err)
	}
	unit, _ := os.ReadFile(filepath.Join(root, UnitFile))
	for _, want := range []string{"ExecStart=/usr/local/lib/docker/cli-plugins/docker-dso agent --config /etc/dso/dso.yaml", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/run/dso /var/lib/dso", "PrivateTmp=yes", "RuntimeDirectory=dso"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	if len(steps) < 6 || !steps[0].Done {
		t.Errorf("steps = %+v (want the group reported as created)", steps)
	}

	// Running it again keeps an edited dso.yaml and repairs modes.
	cfg := filepath.Join(root, ConfigFile)
	os.WriteFile(cfg, []byte("# mine\n"), 0o600)
	os.Chmod(filepath.Join(root, ConfigDir), 0o700)
	steps, err = Bootstrap(context.Background(), BootstrapOptions{Root: root, Provider: "vault", Binary: "/usr/bin/docker-dso"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(cfg); string(b) != "# mine\n" {
		t.Fatal("a second bootstrap overwrote dso.yaml")
	}
	if mode, _, _ := stat(t, filepath.Join(root, ConfigDir)); mode != os.ModeDir|0o775 {
		t.Errorf("/etc/dso mode not repaired: %v", mode)
	}
	if steps[0].Done {
		t.Error("the group was created twice")
	}
}

func TestBootstrapBadInputChangesNothing(t *testing.T) {
	root := t.TempDir()
	for _, opts := range []BootstrapOptions{
		{Root: root, Provider: "gcp", Binary: "/usr/bin/docker-dso"},
		{Root: root, Provider: "aws", Binary: "docker-dso"},
	} {
		if _, err := Bootstrap(context.Background(), opts); err == nil {
			t.Errorf("accepted %+v", opts)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("bad input left files: %v", entries)
	}
}

func TestStarterConfigsAreValid(t *testing.T) {
	loader := config.System()
	loader.LookupEnv = func(string) (string, bool) { return "token-from-env", true }
	for _, p := range Providers {
		data, err := StarterConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := loader.Parse("dso.yaml", data)
		if err != nil {
			t.Fatalf("starter for %s does not validate: %v", p, err)
		}
		if _, ok := cfg.Providers[p]; !ok {
			t.Errorf("starter for %s has no provider %s", p, p)
		}
	}
}

func TestCommandArgs(t *testing.T) {
	if a, _ := SystemctlArgs("enable"); strings.Join(a, " ") != "enable --now dso-agent.service" {
		t.Errorf("enable: %v", a)
	}
	if _, err := SystemctlArgs("reboot"); err == nil {
		t.Error("unknown action accepted")
	}
	for _, p := range []string{"err", "3", "debug"} {
		if CheckPriority(p) != nil {
			t.Errorf("priority %s refused", p)
		}
	}
	for _, p := range []string{"error", "8", ""} {
		if CheckPriority(p) == nil {
			t.Errorf("priority %q accepted", p)
		}
	}
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.Local)
	since, err := ParseSince("1h", now)
	if err != nil || !since.Equal(now.Add(-time.Hour)) {
		t.Errorf("1h: %v %v", since, err)
	}
	if _, err := ParseSince("yesterday-ish", now); err == nil {
		t.Error("bad --since accepted")
	}
	got := strings.Join(JournalctlArgs(true, "err", since), " ")
	if got != "--unit dso-agent.service --no-pager --output short-iso --follow --priority err --since 2025-03-01 11:00:00" {
		t.Errorf("journalctl args: %s", got)
	}
}

func TestExecMissingProgram(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := Exec(context.Background(), "systemctl", "status"); !errors.Is(err, ErrNoSystemd) {
		t.Fatalf("err = %v", err)
	}
}

// TestUnitVerifies asks systemd's own checker about the unit, where it is
// installed (it works without systemd running).
func TestUnitVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		testbed.Unavailable(t, "systemd-analyze is not installed (scripts/tools/systemd.sh installs it)")
	}
	path := filepath.Join(t.TempDir(), UnitName)
	if err := os.WriteFile(path, []byte(Unit("/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// FuzzParseSince: any input gives an error or a time not after now, and
// that time is the input read back: now less the duration, or the
// timestamp whose fields, formatted, are the input's numbers (Go's parser
// takes an hour without its leading zero, "3:04:05", as journalctl does).
// (0001-01-01 is a valid date: under UTC it is the zero time.)
func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"1h", "30m", "2025-01-02", "2025-01-02 03:04:05", "2025-01-02T03:04:05", "-1h", "0s", "", "1e9h", "0001-01-01", "2099-01-01", "2562047h47m16.854775807s", "0000-01-01 0:00:00", "2025-01-02 3:04:05"} {
		f.Add(s)
	}
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSince(s, now)
		if err != nil {
			if !strings.Contains(err.Error(), "--since") {
				t.Fatalf("%q: the error does not name the flag: %v", s, err)
			}
			return
		}
		if got.After(now) {
			t.Fatalf("%q: %v is after now (%v)", s, got, now)
		}
		if d, err := time.ParseDuration(s); err == nil {
			if d <= 0 || !got.Equal(now.Add(-d)) {
				t.Fatalf("%q: got %v, want now less %v", s, got, d)
			}
			return
		}
		for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
			if slices.Equal(numbers(got.In(time.Local).Format(layout)), numbers(s)) && strings.Count(layout, "T") == strings.Count(s, "T") {
				return
			}
		}
		t.Fatalf("%q: got %v, which formats to none of the accepted forms of the input", s, got)
	})
}

// numbers are the values of the runs of digits in s, in order.
func numbers(s string) []int {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r < '0' || r > '9' }) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil
		}
		out = append(out, n)
	}
	return out
}

func TestParseSinceRefusesTheFuture(t *testing.T) {
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	if _, err := ParseSince("2099-01-01", now); err == nil || !strings.Contains(err.Error(), "in the future") {
		t.Errorf("a date after now: %v, want a refusal", err)
	}
}
