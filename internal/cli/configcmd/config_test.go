package configcmd_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/cli"
	"github.com/dso-project/dso/internal/cli/configcmd"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/iostreams"
)

// canary stands for a Vault token; it must never be printed.
const canary = "hvs.CANARY-7d41e2-never-print"

// dso runs the real command tree in-process and returns the exit code,
// stdout and stderr.
func dso(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ios, _, out, errOut := iostreams.Test()
	root := cli.NewRootCmd(&cmdutil.Factory{IO: ios})
	root.SetArgs(args)
	code := cli.ExitCode(ios, root.Execute())
	return code, out.String(), errOut.String()
}

// TestValidateReportsEachProblem is the must-show case: a misspelt key and a
// value of the wrong type are both reported with file:line:column, and the
// command fails with the configuration exit code.
func TestValidateReportsEachProblem(t *testing.T) {
	file := filepath.Join("testdata", "unknown-key-wrong-type.yaml")
	code, out, errOut := dso(t, "config", "validate", "-c", file)
	if code != cmdutil.ExitConfig {
		t.Errorf("exit code %d, want %d (stderr: %s)", code, cmdutil.ExitConfig, errOut)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
	for _, want := range []string{
		file + `:7:5: providers.vault: unknown key "adress" (did you mean "address"?)`,
		file + `:10:23: agent.watch.polling_interval: expected a duration such as "30s"`,
		file + `:14:15: secrets[0].mappings: expected a mapping such as "DB_PASSWORD: prod/db/password", got a list`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

func TestValidateValid(t *testing.T) {
	t.Setenv("VAULT_TOKEN", canary)
	file := filepath.Join("testdata", "seed-vault.yaml")
	code, out, errOut := dso(t, "config", "validate", "--config", file)
	if code != 0 || out != file+": valid\n" || errOut != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestValidateFindsDsoYamlInWorkingDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dso.yaml"), []byte("providers:\n  local: {type: local}\nsecrets: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	code, out, errOut := dso(t, "config", "validate")
	if code != 0 || out != "dso.yaml: valid\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestValidateMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	code, _, errOut := dso(t, "config", "validate", "-c", missing)
	if code != cmdutil.ExitConfig || !strings.Contains(errOut, missing) || !strings.Contains(errOut, "no such file") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// TestShowNeverPrintsToken gives a canary token through ${VAULT_TOKEN} and
// checks both output formats, and the error of a file that misuses it.
func TestShowNeverPrintsToken(t *testing.T) {
	t.Setenv("VAULT_TOKEN", canary)
	file := filepath.Join("testdata", "seed-vault.yaml")
	for _, args := range [][]string{{"config", "show", "-c", file}, {"config", "show", "--json", "-c", file}} {
		code, out, errOut := dso(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		if strings.Contains(out+errOut, canary) {
			t.Fatalf("%v printed the token:\n%s", args, out)
		}
		for _, want := range []string{file, "<redacted>", "30s", "https://vault.example.com:8200", "DB_PASSWORD", "rolling"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: output lacks %q:\n%s", args, want, out)
			}
		}
	}

	bad := filepath.Join(t.TempDir(), "dso.yaml")
	if err := os.WriteFile(bad, []byte("agent:\n  watch:\n    polling_interval: ${VAULT_TOKEN}\n  api:\n    token: ${VAULT_TOKEN}\n    adress: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"show", "validate"} {
		code, out, errOut := dso(t, "config", sub, "-c", bad)
		if code != cmdutil.ExitConfig || strings.Contains(out+errOut, canary) || !strings.Contains(errOut, "${VAULT_TOKEN}") {
			t.Errorf("%s: exit %d, output:\n%s%s", sub, code, out, errOut)
		}
	}
}

func TestShowYAML(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dso.yaml")
	if err := os.WriteFile(file, []byte("providers:\n  local: {type: local, vault_file: ~/v.enc}\nsecrets:\n  - name: s\n    inject: {type: file}\n    mappings: {A: a/b}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", "/home/someone")
	code, out, errOut := dso(t, "config", "show", "-c", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"# " + file, "vault_file: /home/someone/v.enc", "polling_interval: 30s", "provider: local", "strategy: rolling"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestFlags(t *testing.T) {
	cases := []struct {
		args   []string
		action string
		json   bool
		code   int
	}{
		{[]string{"validate"}, configcmd.ActionValidate, false, 0},
		{[]string{"show"}, configcmd.ActionShow, false, 0},
		{[]string{"show", "--json"}, configcmd.ActionShow, true, 0},
		{[]string{"validate", "extra"}, "", false, cmdutil.ExitUsage},
		{[]string{"validate", "--json"}, "", false, cmdutil.ExitUsage},
		{[]string{"bogus"}, "", false, cmdutil.ExitUsage},
	}
	for _, c := range cases {
		ios, _, _, _ := iostreams.Test()
		f := &cmdutil.Factory{IO: ios}
		var got *configcmd.Options
		cmd := configcmd.NewCmd(f, func(o *configcmd.Options) error { got = o; return nil })
		cmd.SetFlagErrorFunc(cmdutil.UsageError)
		cmd.SetArgs(c.args)
		cmd.SetOut(ios.Out)
		cmd.SetErr(ios.ErrOut)
		err := cmd.Execute()
		if code := cli.ExitCode(ios, err); code != c.code {
			t.Errorf("%v: exit %d, want %d (%v)", c.args, code, c.code, err)
			continue
		}
		if c.code == 0 && (got == nil || got.Action != c.action || got.JSON != c.json) {
			t.Errorf("%v: options %+v", c.args, got)
		}
	}
}
