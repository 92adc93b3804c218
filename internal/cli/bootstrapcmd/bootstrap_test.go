package bootstrapcmd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/iostreams"
	"github.com/dso-project/dso/internal/systemd"
	"github.com/dso-project/dso/internal/testbed"
)

func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	var got *Options
	cmd := NewCmd(&cmdutil.Factory{IO: ios}, func(o *Options) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(ios.Out)
	cmd.SetErr(ios.ErrOut)
	cmd.SetFlagErrorFunc(cmdutil.UsageError)
	err := cmd.Execute()
	return got, err
}

func TestFlags(t *testing.T) {
	o, err := parse(t, "agent", "--non-interactive", "--provider", "azure")
	if err != nil || !o.NonInteractive || o.Provider != "azure" || o.Root != "/" {
		t.Fatalf("opts %+v err %v", o, err)
	}
	if _, err := parse(t, "agent", "--provider", "gcp"); err == nil || !strings.Contains(err.Error(), "gcp") {
		t.Fatalf("bad provider: %v", err)
	}
	if _, err := parse(t, "agent", "extra"); err == nil {
		t.Fatal("extra argument accepted")
	}
}

// fakeRoot is a directory that groupadd --prefix and systemctl --root take
// as a system root.
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
		os.WriteFile(filepath.Join(root, "etc", name), []byte(content), 0o644)
	}
	return root
}

func TestBootstrapIntoRoot(t *testing.T) {
	root := fakeRoot(t)
	ios, _, out, _ := iostreams.Test()
	err := run(t.Context(), &Options{Factory: &cmdutil.Factory{IO: ios}, NonInteractive: true, Provider: "vault", Root: root})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(root, systemd.ConfigFile))
	if err != nil || !strings.Contains(string(cfg), "type: vault") {
		t.Fatalf("dso.yaml: %v\n%s", err, cfg)
	}
	unit, _ := os.ReadFile(filepath.Join(root, systemd.UnitFile))
	exe, _ := os.Executable()
	exe, _ = filepath.EvalSymlinks(exe)
	if !strings.Contains(string(unit), "ExecStart="+exe+" agent") {
		t.Fatalf("unit does not run this binary:\n%s", unit)
	}
	for _, want := range []string{"done    group dso", "/etc/dso/dso.yaml for provider vault", "dso-agent.service enabled", "docker dso agent"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestNonInteractiveWithoutProviderNeedsOne(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	root := t.TempDir()
	ios, _, _, _ := iostreams.Test()
	err := run(t.Context(), &Options{Factory: &cmdutil.Factory{IO: ios}, NonInteractive: true, Root: root})
	if err == nil || !strings.Contains(err.Error(), "--provider") {
		t.Fatalf("err = %v", err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("files written: %v", entries)
	}
}

func TestPromptForProvider(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sys/class/dmi/id"), 0o755)
	os.WriteFile(filepath.Join(root, "sys/class/dmi/id/board_vendor"), []byte("Amazon EC2\n"), 0o644)
	ios, in, out, errOut := iostreams.Test()
	ios.SetTTY(true)
	in.WriteString("gcp\n\n")
	p, err := chooseProvider(&Options{Factory: &cmdutil.Factory{IO: ios}, Root: root})
	if err != nil || p != "aws" {
		t.Fatalf("provider %q err %v (out %q, err %q)", p, err, out, errOut)
	}
	if !strings.Contains(errOut.String(), `"gcp" is not one of`) || !strings.Contains(out.String(), "[aws]") {
		t.Fatalf("prompt: %q / %q", out, errOut)
	}
}
