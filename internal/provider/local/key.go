package local

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"github.com/dso-project/dso/internal/vaultfile"
)

// Environment variables that locate the vault and supply its key.
const (
	EnvVaultFile  = "DSO_VAULT_FILE"      // vault path (default ~/.dso/vault.enc)
	EnvKeyFile    = "DSO_MASTER_KEY_FILE" // key file path (default ~/.dso/master.key)
	EnvMasterKey  = "DSO_MASTER_KEY"      // the key itself, base64; overrides the key file
	EnvPassphrase = "DSO_PASSPHRASE"      // passphrase of a passphrase-mode vault
)

// Paths locate a vault and its key file.
type Paths struct {
	Vault   string
	KeyFile string
}

// DefaultPaths returns ~/.dso/vault.enc and ~/.dso/master.key (with $HOME),
// or the paths in DSO_VAULT_FILE and DSO_MASTER_KEY_FILE when set.
func DefaultPaths(getenv func(string) string) (Paths, error) {
	p := Paths{Vault: getenv(EnvVaultFile), KeyFile: getenv(EnvKeyFile)}
	if p.Vault != "" && p.KeyFile != "" {
		return p, nil
	}
	home := getenv("HOME")
	if home == "" {
		return Paths{}, fmt.Errorf("cannot find the vault: $HOME is not set (set %s and %s, or HOME)", EnvVaultFile, EnvKeyFile)
	}
	if p.Vault == "" {
		p.Vault = filepath.Join(home, ".dso", "vault.enc")
	}
	if p.KeyFile == "" {
		p.KeyFile = filepath.Join(home, ".dso", "master.key")
	}
	return p, nil
}

// ResolvePaths returns the vault and key file paths: the given ones (from
// command flags) where set, else DefaultPaths.
func ResolvePaths(vault, keyFile string, getenv func(string) string) (Paths, error) {
	if vault != "" && keyFile != "" {
		return Paths{Vault: vault, KeyFile: keyFile}, nil
	}
	p, err := DefaultPaths(getenv)
	if err != nil {
		return Paths{}, err
	}
	if vault != "" {
		p.Vault = vault
	}
	if keyFile != "" {
		p.KeyFile = keyFile
	}
	return p, nil
}

// TerminalPrompt returns a Prompt that writes its prompt to w and reads a
// line from the terminal fd without echo.
func TerminalPrompt(fd int, w io.Writer) func(string) ([]byte, error) {
	return func(prompt string) ([]byte, error) {
		fmt.Fprint(w, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(w)
		if err != nil {
			return nil, fmt.Errorf("read from the terminal: %w", err)
		}
		return b, nil
	}
}

// ExpandHome replaces a leading "~/" in path with $HOME, as dso.yaml's
// vault_file and master_key_file are written.
func ExpandHome(path string, getenv func(string) string) (string, error) {
	if path != "~" && !strings.HasPrefix(path, "~/") {
		return path, nil
	}
	home := getenv("HOME")
	if home == "" {
		return "", fmt.Errorf("cannot expand %q: $HOME is not set", path)
	}
	return filepath.Join(home, strings.TrimPrefix(path, "~")), nil
}

// KeySource obtains the key of a vault.
type KeySource struct {
	// KeyFile is read when DSO_MASTER_KEY is not set.
	KeyFile string
	// Getenv looks up environment variables (os.Getenv outside tests).
	Getenv func(string) string
	// Prompt asks for a passphrase without echo; nil when there is no terminal.
	Prompt func(prompt string) ([]byte, error)
}

// Load returns the key for the existing vault at vaultPath, of the kind its
// header asks for.
func (s KeySource) Load(vaultPath string) (vaultfile.Key, error) {
	mode, err := vaultfile.ReadMode(vaultPath)
	if err != nil {
		return vaultfile.Key{}, err
	}
	if mode == vaultfile.ModePassphrase {
		return s.Passphrase(vaultPath, false)
	}
	return s.RawKey()
}

// RawKey returns the key from DSO_MASTER_KEY, else from the key file.
func (s KeySource) RawKey() (vaultfile.Key, error) {
	if text := s.Getenv(EnvMasterKey); text != "" {
		return vaultfile.ParseKey([]byte(text), EnvMasterKey)
	}
	return vaultfile.ReadKeyFile(s.KeyFile)
}

// MinPassphrase is the shortest passphrase accepted for a new vault.
const MinPassphrase = 8

// Passphrase returns a passphrase key from DSO_PASSPHRASE, else from the
// prompt. For a new vault (create), the prompt asks twice and a passphrase
// shorter than MinPassphrase is refused.
func (s KeySource) Passphrase(vaultPath string, create bool) (vaultfile.Key, error) {
	p, source := []byte(s.Getenv(EnvPassphrase)), EnvPassphrase
	if len(p) == 0 {
		if s.Prompt == nil {
			return vaultfile.Key{}, fmt.Errorf("vault %s needs a passphrase: %w: set %s or run on a terminal", vaultPath, vaultfile.ErrKey, EnvPassphrase)
		}
		var err error
		source = "the passphrase prompt"
		if p, err = s.Prompt("Passphrase for " + vaultPath + ": "); err != nil {
			return vaultfile.Key{}, err
		}
		if create {
			again, err := s.Prompt("Repeat the passphrase: ")
			if err != nil {
				return vaultfile.Key{}, err
			}
			if !bytes.Equal(p, again) {
				return vaultfile.Key{}, fmt.Errorf("vault %s: %w: the two passphrases differ", vaultPath, vaultfile.ErrKey)
			}
		}
	}
	if create && len(p) < MinPassphrase {
		return vaultfile.Key{}, fmt.Errorf("vault %s: %w: the passphrase from %s is shorter than %d characters", vaultPath, vaultfile.ErrKey, source, MinPassphrase)
	}
	return vaultfile.PassphraseKey(p, vaultfile.DefaultArgon2, source)
}
