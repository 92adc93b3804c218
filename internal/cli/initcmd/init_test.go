package initcmd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/iostreams"
	"github.com/dso-project/dso/internal/vaultfile"
)

func runInit(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	ios, _, _, errOut := iostreams.Test()
	f := &cmdutil.Factory{IO: ios}
	var captured *Options
	cmd := NewCmd(f, func(o *Options) error { captured = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(errOut)
	cmd.SetErr(errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err != nil {
		return errOut.String(), err
	}
	captured.Getenv = func(k string) string { return env[k] }
	err := run(captured)
	return errOut.String(), err
}

func TestFlags(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	var got *Options
	cmd := NewCmd(&cmdutil.Factory{IO: ios}, func(o *Options) error { got = o; return nil })
	cmd.SetArgs([]string{"--passphrase", "--vault-file", "/v", "--key-file", "/k"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !got.Passphrase || got.VaultFile != "/v" || got.KeyFile != "/k" {
		t.Errorf("options = %+v", got)
	}
	cmd = NewCmd(&cmdutil.Factory{IO: ios}, func(*Options) error { return nil })
	cmd.SetArgs([]string{"extra"})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	var ee *cmdutil.ExitError
	if err := cmd.Execute(); !errors.As(err, &ee) || ee.Code != cmdutil.ExitUsage {
		t.Errorf("init with an argument: %v", err)
	}
}

func TestMasterKeyFromEnvWritesNoKeyFile(t *testing.T) {
	home := t.TempDir()
	raw, _ := vaultfile.GenerateKey()
	env := map[string]string{"HOME": home, "DSO_MASTER_KEY": string(vaultfile.EncodeKey(raw))}
	out, err := runInit(t, env)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "DSO_MASTER_KEY") {
		t.Errorf("output does not say where the key is: %q", out)
	}
	if _, err := os.Stat(filepath.Join(home, ".dso", "master.key")); err == nil {
		t.Error("a key file was written although DSO_MASTER_KEY was set")
	}
	k, _ := vaultfile.RawKey(raw, "test")
	if _, err := vaultfile.Open(filepath.Join(home, ".dso", "vault.enc"), k); err != nil {
		t.Errorf("the vault does not open with DSO_MASTER_KEY: %v", err)
	}
}

func TestReusesExistingKeyFile(t *testing.T) {
	home := t.TempDir()
	keyFile := filepath.Join(home, "keys", "master.key")
	os.MkdirAll(filepath.Dir(keyFile), 0o700)
	raw, _ := vaultfile.GenerateKey()
	if err := vaultfile.WriteKeyFile(keyFile, raw); err != nil {
		t.Fatal(err)
	}
	out, err := runInit(t, map[string]string{"HOME": home}, "--key-file", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "reused") {
		t.Errorf("output: %q", out)
	}
	k, _ := vaultfile.ReadKeyFile(keyFile)
	if _, err := vaultfile.Open(filepath.Join(home, ".dso", "vault.enc"), k); err != nil {
		t.Errorf("the vault does not open with the existing key file: %v", err)
	}
}

func TestBadKeyFileChangesNothing(t *testing.T) {
	home := t.TempDir()
	keyFile := filepath.Join(home, "master.key")
	os.WriteFile(keyFile, []byte("garbage\n"), 0o600)
	_, err := runInit(t, map[string]string{"HOME": home}, "--key-file", keyFile)
	if !errors.Is(err, vaultfile.ErrKey) || !strings.Contains(err.Error(), keyFile) {
		t.Errorf("bad key file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(home, ".dso")); err == nil {
		t.Error("init with a bad key file created ~/.dso")
	}
}
