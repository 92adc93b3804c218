package vaultfile

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// KeySize is the length of a raw vault key in bytes.
const KeySize = 32

// Mode says how the key of a vault file is obtained.
type Mode byte

// Key modes, as stored in the file header.
const (
	ModeKeyFile    Mode = 1 // 32 random bytes from a key file or DSO_MASTER_KEY
	ModePassphrase Mode = 2 // derived from a passphrase with Argon2id
)

func (m Mode) String() string {
	switch m {
	case ModeKeyFile:
		return "key file"
	case ModePassphrase:
		return "passphrase"
	}
	return fmt.Sprintf("unknown mode %d", byte(m))
}

// Argon2Params are the Argon2id cost parameters of a passphrase vault. They
// are chosen when the vault is created and stored in its header.
type Argon2Params struct {
	Time      uint32 // passes over memory
	MemoryKiB uint32 // memory in KiB
	Threads   uint8  // lanes
}

// DefaultArgon2 follows the second recommendation of RFC 9106 (t=3, 64 MiB, p=4).
var DefaultArgon2 = Argon2Params{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// Bounds on stored parameters, so that a crafted header cannot ask for
// unbounded work or memory.
const (
	maxArgonTime   = 64
	maxArgonMemory = 4 * 1024 * 1024 // 4 GiB in KiB
)

func (p Argon2Params) check() error {
	switch {
	case p.Time < 1 || p.Time > maxArgonTime:
		return fmt.Errorf("argon2 time %d out of range 1..%d", p.Time, maxArgonTime)
	case p.Threads < 1:
		return fmt.Errorf("argon2 threads must be at least 1")
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxArgonMemory:
		return fmt.Errorf("argon2 memory %d KiB out of range %d..%d", p.MemoryKiB, 8*uint32(p.Threads), maxArgonMemory)
	}
	return nil
}

// Key opens a vault: either a raw 32-byte key or a passphrase. Source says
// where it came from ("key file /root/.dso/master.key", "DSO_PASSPHRASE"),
// so that a wrong-key error can tell the user what to check.
type Key struct {
	mode       Mode
	raw        []byte
	passphrase []byte
	params     Argon2Params
	source     string
}

// RawKey returns a key-file mode key from 32 raw bytes.
func RawKey(raw []byte, source string) (Key, error) {
	if len(raw) != KeySize {
		return Key{}, fmt.Errorf("%s: %w: want %d bytes, got %d", source, ErrKey, KeySize, len(raw))
	}
	return Key{mode: ModeKeyFile, raw: bytes.Clone(raw), source: source}, nil
}

// PassphraseKey returns a passphrase mode key. params are used only when a
// vault is created; an existing vault uses the parameters in its header.
func PassphraseKey(passphrase []byte, params Argon2Params, source string) (Key, error) {
	if len(passphrase) == 0 {
		return Key{}, fmt.Errorf("%s: %w: empty passphrase", source, ErrKey)
	}
	if err := params.check(); err != nil {
		return Key{}, fmt.Errorf("%s: %w: %v", source, ErrKey, err)
	}
	return Key{mode: ModePassphrase, passphrase: bytes.Clone(passphrase), params: params, source: source}, nil
}

// Mode returns the key's mode.
func (k Key) Mode() Mode { return k.mode }

// Source says where the key came from.
func (k Key) Source() string { return k.source }

// GenerateKey returns 32 random bytes for a new key-file vault.
func GenerateKey() ([]byte, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate vault key: %w", err)
	}
	return raw, nil
}

// EncodeKey returns the text form of a raw key: standard base64 and a newline.
// It is the content of a key file and the value of DSO_MASTER_KEY.
func EncodeKey(raw []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(raw) + "\n")
}

// ParseKey reads the text form of a key (surrounding white space allowed).
// source names where the text came from, for errors; they never quote it.
func ParseKey(text []byte, source string) (Key, error) {
	raw, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(text)))
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w: not base64 text", source, ErrKey)
	}
	return RawKey(raw, source)
}

// ReadKeyFile reads a key file. It refuses a file that group or others can
// read or write, as ssh does for private keys.
func ReadKeyFile(path string) (Key, error) {
	source := "key file " + path
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Key{}, fmt.Errorf("%s: %w: the file does not exist", source, ErrKey)
	}
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w: %v", source, ErrKey, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w: %v", source, ErrKey, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return Key{}, fmt.Errorf("%s: %w: permissions %#o let others use it; run: chmod 600 %s", source, ErrKey, perm, path)
	}
	if fi.Size() > 1024 {
		return Key{}, fmt.Errorf("%s: %w: %d bytes is too long for a key", source, ErrKey, fi.Size())
	}
	text, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w: %v", source, ErrKey, err)
	}
	return ParseKey(text, source)
}

// WriteKeyFile creates a key file holding raw with mode 0600. It refuses to
// overwrite an existing file (fs.ErrExist).
func WriteKeyFile(path string, raw []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	_, err = f.Write(EncodeKey(raw))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(path)
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	return nil
}
