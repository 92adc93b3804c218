// Package vaultfile is the encrypted file format of DSO's local vault: a
// header (magic, format version, key mode, salt, Argon2id parameters in
// passphrase mode, nonce, key check value, header checksum) followed by the
// entries sealed with AES-256-GCM, the whole header being additional data.
//
// A wrong key (ErrWrongKey) is told apart from a damaged or modified file
// (ErrIntegrity). Writes go to a temporary file in the same directory that is
// synced and renamed over the vault, under an flock on "<vault>.lock", so
// concurrent writers in several processes never lose an update, and a failed
// open or update leaves the file as it was. Errors name the file and what is
// wrong, never a value.
package vaultfile

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Errors, to be tested with errors.Is. Messages read "vault PATH: <error>: detail".
var (
	ErrNotExist  = errors.New("does not exist")
	ErrExists    = errors.New("already exists")
	ErrWrongKey  = errors.New("wrong key")
	ErrIntegrity = errors.New("integrity check failed: the file is damaged or was modified outside dso")
	ErrKey       = errors.New("no usable key")
	ErrTooLarge  = errors.New("value too large")
	ErrLocked    = errors.New("locked by another process")
)

// Entry is a secret with its value.
type Entry struct {
	Name    string
	Value   []byte
	Version uint64    // 1 for the first value, one more for each later Set
	Updated time.Time // UTC time of the last Set
}

// Meta describes a secret without its value.
type Meta struct {
	Name    string    `json:"name"`
	Version uint64    `json:"version"`
	Updated time.Time `json:"updated"`
}

// Vault is the decrypted content of a vault file. From Open it is a snapshot:
// changes to it are saved only inside Update.
type Vault struct {
	path    string
	keys    *keys
	entries map[string]*entry
	dirty   bool
}

// Path returns the file the vault was read from.
func (v *Vault) Path() string { return v.path }

func (v *Vault) live(name string) (*entry, bool) {
	e, ok := v.entries[name]
	if !ok || e.deleted {
		return nil, false
	}
	return e, true
}

// Get returns the secret called name, with a copy of its value.
func (v *Vault) Get(name string) (Entry, bool) {
	e, ok := v.live(name)
	if !ok {
		return Entry{}, false
	}
	return Entry{Name: name, Value: bytes.Clone(e.value), Version: e.version, Updated: e.updated}, true
}

// Version returns the version of the secret called name without copying its value.
func (v *Vault) Version(name string) (uint64, bool) {
	e, ok := v.live(name)
	if !ok {
		return 0, false
	}
	return e.version, true
}

// Set stores a copy of value under name and returns the new version: one
// more than the previous value's, also when the secret was deleted before.
func (v *Vault) Set(name string, value []byte) (uint64, error) {
	if name == "" || len(name) > maxNameSize {
		return 0, fmt.Errorf("secret name must have 1 to %d bytes", maxNameSize)
	}
	if len(value) > MaxValueSize {
		return 0, fmt.Errorf("secret %q: %w: %d bytes, the limit is %d bytes (1 MiB)", name, ErrTooLarge, len(value), MaxValueSize)
	}
	var version uint64 = 1
	if old, ok := v.entries[name]; ok {
		version = old.version + 1
	}
	v.entries[name] = &entry{version: version, updated: time.Now().UTC(), value: bytes.Clone(value)}
	v.dirty = true
	return version, nil
}

// Delete removes the secret called name and reports whether it was there.
// The name's version is remembered for a later Set.
func (v *Vault) Delete(name string) bool {
	e, ok := v.live(name)
	if !ok {
		return false
	}
	v.entries[name] = &entry{version: e.version, updated: time.Now().UTC(), deleted: true}
	v.dirty = true
	return true
}

// List describes every secret, sorted by name, without values.
func (v *Vault) List() []Meta {
	list := make([]Meta, 0, len(v.entries))
	for name, e := range v.entries {
		if !e.deleted {
			list = append(list, Meta{Name: name, Version: e.version, Updated: e.updated})
		}
	}
	slices.SortFunc(list, func(a, b Meta) int { return strings.Compare(a.Name, b.Name) })
	return list
}

// Len returns the number of secrets.
func (v *Vault) Len() int {
	n := 0
	for _, e := range v.entries {
		if !e.deleted {
			n++
		}
	}
	return n
}

// Parse decrypts the content of a vault file that was read from path (used
// only in errors). Open and Update call it; callers that read the file
// themselves (to stat the same descriptor) use it directly.
func Parse(path string, data []byte, k Key) (*Vault, error) {
	ks, payload, err := openFile(data, k)
	if err != nil {
		return nil, fmt.Errorf("vault %s: %w", path, err)
	}
	entries, err := decodePayload(payload)
	if err != nil {
		return nil, fmt.Errorf("vault %s: %w: malformed contents: %v", path, ErrIntegrity, err)
	}
	return &Vault{path: path, keys: ks, entries: entries}, nil
}

func (v *Vault) marshal() ([]byte, error) {
	names := make([]string, 0, len(v.entries))
	for n := range v.entries {
		names = append(names, n)
	}
	slices.Sort(names)
	return seal(v.keys, encodePayload(names, v.entries))
}
