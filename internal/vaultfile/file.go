package vaultfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// lockTimeout bounds the wait for another process's update.
const lockTimeout = 30 * time.Second

// Create writes a new, empty vault at path, readable by its owner only. The
// directory must exist. It refuses to replace an existing file (ErrExists).
func Create(path string, k Key) error {
	ks, err := newKeys(k)
	if err != nil {
		return fmt.Errorf("vault %s: %w", path, err)
	}
	unlock, err := lock(path)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("vault %s: %w", path, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vault %s: %w", path, err)
	}
	v := &Vault{path: path, keys: ks, entries: map[string]*entry{}}
	return v.save()
}

// Open reads and decrypts the vault at path. The result is a snapshot.
func Open(path string, k Key) (*Vault, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, readError(path, err)
	}
	return Parse(path, data, k)
}

// Update reads the vault at path, calls fn with it and, if fn returns nil and
// changed something, writes the result, all under the vault's lock. When fn
// or anything else fails, the file is left as it was.
func Update(path string, k Key, fn func(*Vault) error) error {
	if _, err := os.Stat(path); err != nil {
		return readError(path, err)
	}
	unlock, err := lock(path)
	if err != nil {
		return err
	}
	defer unlock()
	v, err := Open(path, k)
	if err != nil {
		return err
	}
	if err := fn(v); err != nil {
		return err
	}
	if !v.dirty {
		return nil
	}
	return v.save()
}

// ReadMode returns the key mode of the vault at path, so that a caller can
// ask for the right kind of key. Damaged headers give ErrIntegrity.
func ReadMode(path string) (Mode, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, readError(path, err)
	}
	defer f.Close()
	buf := make([]byte, headerSize(ModePassphrase)+tagSize)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("vault %s: %w", path, err)
	}
	h, err := parseHeader(buf[:n])
	if err != nil {
		return 0, fmt.Errorf("vault %s: %w: %s", path, ErrIntegrity, err)
	}
	return h.mode, nil
}

func readError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vault %s: %w", path, ErrNotExist)
	}
	return fmt.Errorf("vault %s: %w", path, err)
}

// save writes v to its path atomically: a temporary file in the same
// directory, synced, renamed over the vault, then the directory synced.
func (v *Vault) save() error {
	data, err := v.marshal()
	if err != nil {
		return fmt.Errorf("vault %s: encrypt: %w", v.path, err)
	}
	if err := writeAtomic(v.path, data); err != nil {
		return fmt.Errorf("vault %s: write: %w", v.path, err)
	}
	v.dirty = false
	return nil
}

func writeAtomic(path string, data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(path)
}

// syncDir makes a rename or creation in the directory of path durable.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// lock takes the exclusive flock on "<path>.lock", waiting up to lockTimeout.
func lock(path string) (unlock func(), err error) {
	lockPath := path + ".lock"
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vault %s: lock: %w", path, err)
	}
	deadline := time.Now().Add(lockTimeout)
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				unix.Flock(int(f.Fd()), unix.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("vault %s: lock %s: %w", path, lockPath, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("vault %s: %w (waited %s for %s)", path, ErrLocked, lockTimeout, lockPath)
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}
