package vaultfile

import (
	"fmt"
	"path/filepath"
	"testing"
)

// benchVault creates a key-file vault holding n secrets of 64 bytes.
func benchVault(b *testing.B, n int) (string, Key) {
	b.Helper()
	k := testKey(b)
	path := filepath.Join(b.TempDir(), "vault.enc")
	if err := Create(path, k); err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 64)
	err := Update(path, k, func(v *Vault) error {
		for i := range n {
			if _, err := v.Set(fmt.Sprintf("project%d/secret_%05d", i%50, i), value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return path, k
}

// BenchmarkOpenGet opens a vault of 10,000 secrets and reads one (target: 50 ms/op).
func BenchmarkOpenGet(b *testing.B) {
	path, k := benchVault(b, 10_000)
	for b.Loop() {
		v, err := Open(path, k)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := v.Get("project7/secret_05007"); !ok {
			b.Fatal("secret missing")
		}
	}
}

// BenchmarkSet sets one secret in a vault of 10,000, fsyncs included (target: 100 ms/op).
func BenchmarkSet(b *testing.B) {
	path, k := benchVault(b, 10_000)
	value := []byte("new value")
	for b.Loop() {
		err := Update(path, k, func(v *Vault) error {
			_, err := v.Set("project7/secret_05007", value)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
