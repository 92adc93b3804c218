package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/vaultfile"
)

const canary = "CANARY-local-provider-51d2"

func setup(t *testing.T) (string, vaultfile.Key) {
	t.Helper()
	raw, err := vaultfile.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := vaultfile.RawKey(raw, "test key")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vault.enc")
	if err := vaultfile.Create(path, k); err != nil {
		t.Fatal(err)
	}
	return path, k
}

func set(t *testing.T, path string, k vaultfile.Key, name, value string) {
	t.Helper()
	err := vaultfile.Update(path, k, func(v *vaultfile.Vault) error {
		_, err := v.Set(name, []byte(value))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestGetVersionNotFound(t *testing.T) {
	ctx := context.Background()
	path, k := setup(t)
	set(t, path, k, "app/db", canary)
	p := New(path, k)
	s, err := p.Get(ctx, "app/db")
	if err != nil || string(s.Value) != canary || s.Version != "1" {
		t.Fatalf("Get = %q, %q, %v; want the value at version 1", s.Value, s.Version, err)
	}
	set(t, path, k, "app/db", canary+"2")
	if v, err := p.Version(ctx, "app/db"); err != nil || v != "2" {
		t.Errorf("Version after a change = %q, %v; want 2", v, err)
	}
	s, err = p.Get(ctx, "app/db")
	if err != nil || string(s.Value) != canary+"2" {
		t.Errorf("Get after a change: %v", err)
	}
	_, err = p.Get(ctx, "app/missing")
	if !errors.Is(err, provider.ErrNotFound) || !strings.Contains(err.Error(), `"local"`) || !strings.Contains(err.Error(), "app/missing") {
		t.Errorf("missing secret: %v; want ErrNotFound naming provider local and the path", err)
	}
	if _, err := p.Version(ctx, "app/missing"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("Version of a missing secret: %v", err)
	}
}

// TestRereadsOnlyOnChange damages the file in place while keeping its size
// and mtime: the versions kept still answer a version check (a value is
// always read from the file: the damage shows); once the mtime moves, the
// version check reads the file again and reports the damage.
func TestRereadsOnlyOnChange(t *testing.T) {
	ctx := context.Background()
	path, k := setup(t)
	set(t, path, k, "app/db", canary)
	p := New(path, k)
	if _, err := p.Version(ctx, "app/db"); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	data, _ := os.ReadFile(path)
	data[len(data)-1] ^= 1
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(data, 0)
	f.Close()
	os.Chtimes(path, fi.ModTime(), fi.ModTime())
	if v, err := p.Version(ctx, "app/db"); err != nil || v != "1" {
		t.Fatalf("unchanged stamp: Version = %q, %v; want the kept version 1", v, err)
	}
	if _, err := p.Get(ctx, "app/db"); !errors.Is(err, vaultfile.ErrIntegrity) {
		t.Fatalf("unchanged stamp: Get = %v; want ErrIntegrity (values are read from the file)", err)
	}
	os.Chtimes(path, fi.ModTime().Add(time.Second), fi.ModTime().Add(time.Second))
	_, err = p.Version(ctx, "app/db")
	if !errors.Is(err, vaultfile.ErrIntegrity) {
		t.Fatalf("changed stamp: Version = %v; want ErrIntegrity", err)
	}
	if strings.Contains(err.Error(), canary) {
		t.Error("error shows the value")
	}
}

func TestMissingVault(t *testing.T) {
	path, k := setup(t)
	_, err := New(path+".none", k).Get(context.Background(), "app/db")
	if !errors.Is(err, vaultfile.ErrNotExist) {
		t.Errorf("missing vault: %v", err)
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestPaths(t *testing.T) {
	p, err := DefaultPaths(env(map[string]string{"HOME": "/h"}))
	if err != nil || p.Vault != "/h/.dso/vault.enc" || p.KeyFile != "/h/.dso/master.key" {
		t.Errorf("DefaultPaths = %+v, %v", p, err)
	}
	p, err = DefaultPaths(env(map[string]string{EnvVaultFile: "/v", EnvKeyFile: "/k"}))
	if err != nil || p.Vault != "/v" || p.KeyFile != "/k" {
		t.Errorf("DefaultPaths from env = %+v, %v", p, err)
	}
	if _, err := DefaultPaths(env(nil)); err == nil {
		t.Error("DefaultPaths without HOME succeeded")
	}
	if got, _ := ExpandHome("~/.dso/vault.enc", env(map[string]string{"HOME": "/h"})); got != "/h/.dso/vault.enc" {
		t.Errorf("ExpandHome = %q", got)
	}
}

func TestKeySource(t *testing.T) {
	dir := t.TempDir()
	raw, _ := vaultfile.GenerateKey()
	keyFile := filepath.Join(dir, "master.key")
	if err := vaultfile.WriteKeyFile(keyFile, raw); err != nil {
		t.Fatal(err)
	}
	vaultPath := filepath.Join(dir, "vault.enc")
	k, err := KeySource{KeyFile: keyFile, Getenv: env(nil)}.RawKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := vaultfile.Create(vaultPath, k); err != nil {
		t.Fatal(err)
	}
	if _, err := (KeySource{KeyFile: keyFile, Getenv: env(nil)}).Load(vaultPath); err != nil {
		t.Errorf("Load with the key file: %v", err)
	}
	// DSO_MASTER_KEY overrides the key file.
	other, _ := vaultfile.GenerateKey()
	src := KeySource{KeyFile: keyFile, Getenv: env(map[string]string{EnvMasterKey: string(vaultfile.EncodeKey(other))})}
	k, err = src.Load(vaultPath)
	if err != nil || k.Source() != EnvMasterKey {
		t.Fatalf("Load with DSO_MASTER_KEY: %v", err)
	}
	if _, err := vaultfile.Open(vaultPath, k); !errors.Is(err, vaultfile.ErrWrongKey) || !strings.Contains(err.Error(), EnvMasterKey) {
		t.Errorf("other key from DSO_MASTER_KEY: %v; want ErrWrongKey naming the variable", err)
	}

	// A passphrase vault asks for a passphrase: from the environment, the
	// prompt, or an error saying how to give one.
	ppath := filepath.Join(dir, "pass.enc")
	pk, _ := vaultfile.PassphraseKey([]byte("a long passphrase"), vaultfile.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}, "test")
	if err := vaultfile.Create(ppath, pk); err != nil {
		t.Fatal(err)
	}
	k, err = KeySource{Getenv: env(map[string]string{EnvPassphrase: "a long passphrase"})}.Load(ppath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vaultfile.Open(ppath, k); err != nil {
		t.Errorf("passphrase from env: %v", err)
	}
	prompted := KeySource{Getenv: env(nil), Prompt: func(string) ([]byte, error) { return []byte("a long passphrase"), nil }}
	if k, err = prompted.Load(ppath); err != nil {
		t.Fatal(err)
	}
	if _, err := vaultfile.Open(ppath, k); err != nil {
		t.Errorf("passphrase from prompt: %v", err)
	}
	_, err = KeySource{Getenv: env(nil)}.Load(ppath)
	if !errors.Is(err, vaultfile.ErrKey) || !strings.Contains(err.Error(), EnvPassphrase) {
		t.Errorf("no terminal, no env: %v", err)
	}
	n := 0
	differ := KeySource{Getenv: env(nil), Prompt: func(string) ([]byte, error) { n++; return bytes.Repeat([]byte{'x'}, n), nil }}
	if _, err := differ.Passphrase(ppath, true); !errors.Is(err, vaultfile.ErrKey) {
		t.Errorf("two different passphrases: %v", err)
	}
}
