package vaultfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// canary is a value that must never appear in an error message.
const canary = "CANARY-vaultfile-7f3a9c"

func testKey(t testing.TB) Key {
	t.Helper()
	raw, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := RawKey(raw, "test key")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fastArgon keeps passphrase tests quick; real vaults use DefaultArgon2.
var fastArgon = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}

func passKey(t testing.TB, p string) Key {
	t.Helper()
	k, err := PassphraseKey([]byte(p), fastArgon, "test passphrase")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newVault(t testing.TB, k Key) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vault.enc")
	if err := Create(path, k); err != nil {
		t.Fatal(err)
	}
	return path
}

func set(t testing.TB, path string, k Key, name string, value []byte) {
	t.Helper()
	err := Update(path, k, func(v *Vault) error {
		_, err := v.Set(name, value)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func noCanary(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), canary) {
		t.Fatalf("error message contains the secret value: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  Key
	}{
		{"key file", testKey(t)},
		{"passphrase", passKey(t, "correct horse battery staple")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := newVault(t, tc.key)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("vault mode = %v, want 0600", fi.Mode().Perm())
			}
			values := map[string][]byte{
				"app/multi":  []byte("line1\nline2  \n"),
				"app/binary": {0, 1, 2, 0xff, 0xfe, '\n', 0},
				"app/canary": []byte(canary),
			}
			for n, val := range values {
				set(t, path, tc.key, n, val)
			}
			v, err := Open(path, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			for n, want := range values {
				e, ok := v.Get(n)
				if !ok || !bytes.Equal(e.Value, want) || e.Version != 1 || e.Updated.IsZero() {
					t.Errorf("Get(%q) = %v, version %d, updated %v; want the stored bytes at version 1", n, ok, e.Version, e.Updated)
				}
			}
			data, _ := os.ReadFile(path)
			if bytes.Contains(data, []byte(canary)) || bytes.Contains(data, []byte("line2  ")) {
				t.Error("the vault file holds a plaintext value")
			}
			if mode, err := ReadMode(path); err != nil || mode != tc.key.Mode() {
				t.Errorf("ReadMode = %v, %v; want %v", mode, err, tc.key.Mode())
			}
		})
	}
}

func TestVersionsListDelete(t *testing.T) {
	k := testKey(t)
	path := newVault(t, k)
	set(t, path, k, "app/a", []byte("one"))
	set(t, path, k, "app/a", []byte("two"))
	set(t, path, k, "app/b", []byte(canary))
	err := Update(path, k, func(v *Vault) error {
		if !v.Delete("app/a") {
			t.Error("Delete(app/a) = false")
		}
		if v.Delete("app/none") {
			t.Error("Delete(app/none) = true")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(path, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.Get("app/a"); ok {
		t.Error("deleted secret still there")
	}
	list := v.List()
	if len(list) != 1 || list[0].Name != "app/b" || list[0].Version != 1 || v.Len() != 1 {
		t.Errorf("List = %+v", list)
	}
	if s := fmt.Sprintf("%+v", list); strings.Contains(s, canary) {
		t.Error("List shows a value")
	}
	// A secret set again after Delete continues its version sequence, so that
	// a watcher comparing versions sees the change.
	set(t, path, k, "app/a", []byte("three"))
	v, _ = Open(path, k)
	if ver, ok := v.Version("app/a"); !ok || ver != 3 {
		t.Errorf("version after delete and set = %d, %v; want 3", ver, ok)
	}
}

func TestCreateRefusesExisting(t *testing.T) {
	k := testKey(t)
	path := newVault(t, k)
	set(t, path, k, "app/a", []byte("x"))
	before, _ := os.ReadFile(path)
	err := Create(path, testKey(t))
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Create over an existing vault: %v; want ErrExists naming the path", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("Create changed an existing vault")
	}
}

func TestNotExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vault.enc")
	k := testKey(t)
	if _, err := Open(path, k); !errors.Is(err, ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Open: %v", err)
	}
	if err := Update(path, k, func(*Vault) error { return nil }); !errors.Is(err, ErrNotExist) {
		t.Errorf("Update: %v", err)
	}
	if _, err := os.Stat(path + ".lock"); err == nil {
		t.Error("Update of a missing vault left a lock file")
	}
}

func TestWrongKey(t *testing.T) {
	k := testKey(t)
	path := newVault(t, k)
	set(t, path, k, "app/a", []byte(canary))
	before, _ := os.ReadFile(path)
	for name, wrong := range map[string]Key{
		"other key":  testKey(t),
		"passphrase": passKey(t, "not the key"),
	} {
		_, err := Open(path, wrong)
		if !errors.Is(err, ErrWrongKey) || errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: Open: %v; want ErrWrongKey naming the path", name, err)
		}
		noCanary(t, err)
		err = Update(path, wrong, func(v *Vault) error {
			_, err := v.Set("app/b", []byte("y"))
			return err
		})
		if !errors.Is(err, ErrWrongKey) {
			t.Errorf("%s: Update: %v", name, err)
		}
	}
	pk := passKey(t, "right one")
	ppath := newVault(t, pk)
	if _, err := Open(ppath, passKey(t, "wrong one")); !errors.Is(err, ErrWrongKey) {
		t.Errorf("wrong passphrase: %v", err)
	}
	if _, err := Open(ppath, pk); err != nil {
		t.Errorf("right passphrase: %v", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("a wrong key changed the file")
	}
}

// TestEveryByteFlip damages each byte of a small vault in turn: with the
// right key every damage is reported as an integrity failure (never a wrong
// key, never success), and neither Open nor Update changes the file.
func TestEveryByteFlip(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  Key
	}{
		{"key file", testKey(t)},
		{"passphrase", passKey(t, "correct horse battery staple")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := newVault(t, tc.key)
			set(t, path, tc.key, "app/c", []byte(canary))
			orig, _ := os.ReadFile(path)
			for i := range orig {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					damaged := bytes.Clone(orig)
					damaged[i] ^= mask
					if err := os.WriteFile(path, damaged, 0o600); err != nil {
						t.Fatal(err)
					}
					_, err := Open(path, tc.key)
					if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), path) {
						t.Fatalf("byte %d ^ %#x: Open: %v; want ErrIntegrity naming the path", i, mask, err)
					}
					noCanary(t, err)
					err = Update(path, tc.key, func(v *Vault) error {
						_, err := v.Set("app/d", []byte("x"))
						return err
					})
					if !errors.Is(err, ErrIntegrity) {
						t.Fatalf("byte %d ^ %#x: Update: %v", i, mask, err)
					}
					if got, _ := os.ReadFile(path); !bytes.Equal(got, damaged) {
						t.Fatalf("byte %d ^ %#x: the damaged file was changed", i, mask)
					}
				}
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	k := testKey(t)
	path := newVault(t, k)
	set(t, path, k, "app/c", []byte(canary))
	orig, _ := os.ReadFile(path)
	for n := 0; n < len(orig); n++ {
		if err := os.WriteFile(path, orig[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, k); !errors.Is(err, ErrIntegrity) {
			t.Fatalf("truncated to %d bytes: %v; want ErrIntegrity", n, err)
		}
	}
	if err := os.WriteFile(path, append(bytes.Clone(orig), 0), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, k); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("one byte appended: %v; want ErrIntegrity", err)
	}
}

func TestLargeValues(t *testing.T) {
	k := testKey(t)
	path := newVault(t, k)
	big := bytes.Repeat([]byte{0, 0xff, '\n', ' '}, MaxValueSize/4)
	set(t, path, k, "app/big", big)
	v, err := Open(path, k)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := v.Get("app/big"); !bytes.Equal(e.Value, big) {
		t.Error("1 MiB value did not round-trip")
	}
	before, _ := os.ReadFile(path)
	err = Update(path, k, func(v *Vault) error {
		_, err := v.Set("app/big", append(big, 0))
		return err
	})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "app/big") {
		t.Errorf("1 MiB + 1 byte: %v; want ErrTooLarge naming the secret", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a refused update changed the file")
	}
}

func TestUpdateErrorChangesNothing(t *testing.T) {
	k := testKey(t)
	path := newVault(t, k)
	set(t, path, k, "app/a", []byte("x"))
	before, _ := os.ReadFile(path)
	boom := errors.New("boom")
	err := Update(path, k, func(v *Vault) error {
		v.Set("app/b", []byte("y"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a failed update changed the file")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestConcurrentUpdates(t *testing.T) {
	k := testKey(t)
	path := newVault(t, k)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			set(t, path, k, fmt.Sprintf("app/s%d", i), []byte("v"))
		})
	}
	wg.Wait()
	v, err := Open(path, k)
	if err != nil {
		t.Fatal(err)
	}
	if v.Len() != 20 {
		t.Errorf("%d secrets after 20 concurrent updates, want 20", v.Len())
	}
}

func TestKeyText(t *testing.T) {
	raw, _ := GenerateKey()
	text := EncodeKey(raw)
	k, err := ParseKey(text, "test")
	if err != nil || !bytes.Equal(k.raw, raw) {
		t.Fatalf("ParseKey(EncodeKey(raw)) = %v", err)
	}
	for _, bad := range []string{"", "not base64!", "AAAA"} {
		if _, err := ParseKey([]byte(bad), "DSO_MASTER_KEY"); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "DSO_MASTER_KEY") {
			t.Errorf("ParseKey(%q): %v", bad, err)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	if err := WriteKeyFile(path, raw); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyFile(path, raw); err == nil {
		t.Error("WriteKeyFile overwrote a key file")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode().Perm())
	}
	if k, err := ReadKeyFile(path); err != nil || !bytes.Equal(k.raw, raw) {
		t.Errorf("ReadKeyFile: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := ReadKeyFile(path); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("ReadKeyFile of a 0644 file: %v", err)
	}
	if _, err := ReadKeyFile(filepath.Join(dir, "none")); !errors.Is(err, ErrKey) {
		t.Errorf("ReadKeyFile of a missing file: %v", err)
	}
}
