package setupcmd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/iostreams"
)

// runSetup runs `setup args...` in dir with stdin, as a terminal or not.
func runSetup(t *testing.T, dir, stdin string, tty bool, args ...string) (string, error) {
	t.Helper()
	ios, in, _, errOut := iostreams.Test()
	ios.SetTTY(tty)
	in.WriteString(stdin)
	f := &cmdutil.Factory{IO: ios, ConfigPath: filepath.Join(dir, "dso.yaml")}
	cmd := NewCmd(f, nil)
	cmd.SetArgs(args)
	cmd.SetOut(errOut)
	cmd.SetErr(errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetFlagErrorFunc(cmdutil.UsageError)
	err := cmd.Execute()
	return errOut.String(), err
}

func exitCode(err error) int {
	var ee *cmdutil.ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return -1
}

func TestWritesLocalConfig(t *testing.T) {
	dir := t.TempDir()
	out, err := runSetup(t, dir, "", false, "--mode", "local", "--non-interactive")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "dso.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"version: v1.0.0\n", "mode: local\n", "    type: local\n",
		"    vault_file: ~/.dso/vault.enc\n", "    master_key_file: ~/.dso/master.key\n", "secrets: []\n"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("dso.yaml lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(out, "docker dso init") {
		t.Errorf("output does not say what to do next: %q", out)
	}
}

func TestRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dso.yaml")
	os.WriteFile(path, []byte("mine\n"), 0o644)
	_, err := runSetup(t, dir, "", false, "--mode", "local")
	if err == nil || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), path) {
		t.Errorf("setup over an existing file: %v; want an error naming it and --force", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "mine\n" {
		t.Error("the existing file was changed")
	}
	if _, err := runSetup(t, dir, "", false, "--force"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !strings.Contains(string(got), "mode: local") {
		t.Error("--force did not overwrite")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v after --force", fi.Mode().Perm())
	}
}

func TestUnsupportedModeIsUsageError(t *testing.T) {
	dir := t.TempDir()
	_, err := runSetup(t, dir, "", false, "--mode", "agent")
	if exitCode(err) != cmdutil.ExitUsage || !strings.Contains(err.Error(), "only --mode local") {
		t.Errorf("--mode agent: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dso.yaml")); err == nil {
		t.Error("a refused setup wrote dso.yaml")
	}
	if _, err := runSetup(t, dir, "", false, "--bogus"); exitCode(err) != cmdutil.ExitUsage {
		t.Errorf("unknown flag: %v", err)
	}
}

func TestConfirmOnTerminal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dso.yaml")
	out, err := runSetup(t, dir, "n\n", true)
	if !errors.Is(err, cmdutil.ErrSilent) || !strings.Contains(out, "Nothing written") {
		t.Errorf("answer n: %v, %q", err, out)
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("answer n wrote the file")
	}
	if _, err := runSetup(t, dir, "\n", true); err != nil {
		t.Fatalf("default answer: %v", err)
	}
	os.WriteFile(path, []byte("mine\n"), 0o644)
	// Overwriting asks with "no" as the default.
	if _, err := runSetup(t, dir, "\n", true, "--force"); !errors.Is(err, cmdutil.ErrSilent) {
		t.Errorf("overwrite, default answer: %v", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "mine\n" {
		t.Error("overwritten without a yes")
	}
	if _, err := runSetup(t, dir, "yes\n", true, "--force"); err != nil {
		t.Fatal(err)
	}
	// --non-interactive never reads stdin.
	os.Remove(path)
	if _, err := runSetup(t, dir, "n\n", true, "--non-interactive"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Error("--non-interactive did not write the file")
	}
}

// TestConfigLoads checks that the starter file is a valid dso.yaml.
func TestConfigLoads(t *testing.T) {
	dir := t.TempDir()
	if _, err := runSetup(t, dir, "", false, "--non-interactive"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", "/home/someone")
	cfg, err := config.Load(filepath.Join(dir, "dso.yaml"))
	if err != nil {
		t.Fatalf("the starter dso.yaml does not load: %v", err)
	}
	p, ok := cfg.Providers["local"]
	if cfg.Mode != config.ModeLocal || !ok || p.Type != config.ProviderLocal || p.VaultFile != "/home/someone/.dso/vault.enc" || len(cfg.Secrets) != 0 {
		t.Errorf("loaded %+v", cfg)
	}
}
