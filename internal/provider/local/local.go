// Package local is the provider over DSO's local encrypted vault file: it
// answers version checks from the versions it keeps (read again only when
// the file changed), reads values from the file when they are asked for
// (never keeping them), and says where the vault and its key live and how the key is obtained
// (DSO_MASTER_KEY, the key file, or a passphrase), for the commands to reuse.
package local

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/vaultfile"
)

// Name is the provider name used in errors.
const Name = "local"

// Provider serves secrets from a vault file. It keeps the versions of the
// secrets (what each of the agent's polls asks), read again only when the
// file changes; values are read from the file when asked for and never
// kept. It is safe for concurrent use.
type Provider struct {
	path string
	key  vaultfile.Key

	mu       sync.Mutex
	versions map[string]uint64 // nil until the file is first read
	stamp    stamp
}

// New returns a provider over the vault at path, opened with key.
func New(path string, key vaultfile.Key) *Provider {
	return &Provider{path: path, key: key}
}

var (
	_ provider.Provider = (*Provider)(nil)
	_ provider.Batcher  = (*Provider)(nil)
)

// Get returns the value of the secret called path and its version as a
// decimal string.
func (p *Provider) Get(ctx context.Context, path string) (provider.Secret, error) {
	r := p.GetMany(ctx, []string{path})[0]
	return r.Secret, r.Err
}

// GetMany reads the file once for all of paths.
func (p *Provider) GetMany(ctx context.Context, paths []string) []provider.Result {
	out := make([]provider.Result, len(paths))
	v, err := p.read(ctx)
	for i, path := range paths {
		if err != nil {
			out[i].Err = err
			continue
		}
		e, ok := v.Get(path)
		if !ok {
			out[i].Err = p.notFound(path)
			continue
		}
		out[i].Secret = provider.Secret{Value: e.Value, Version: strconv.FormatUint(e.Version, 10)}
	}
	return out
}

// Version returns the version of the secret called path without reading
// its value.
func (p *Provider) Version(ctx context.Context, path string) (string, error) {
	versions, err := p.current(ctx)
	if err != nil {
		return "", err
	}
	ver, ok := versions[path]
	if !ok {
		return "", p.notFound(path)
	}
	return strconv.FormatUint(ver, 10), nil
}

func (p *Provider) notFound(path string) error {
	return &provider.Error{Provider: Name, Path: path, Kind: provider.ErrNotFound, Err: fmt.Errorf("not in vault %s", p.path)}
}

// stamp identifies one version of the file: a write renames a new file into
// place, which changes the inode (and usually the size and mtime too).
type stamp struct {
	dev, ino uint64
	size     int64
	mtime    int64 // nanoseconds
}

// current returns the versions of the vault's secrets, reading the file
// again only when its stamp changed. A path whose stamp is the one read
// last is that same file (a write renames a new inode into place): one
// stat, no open, which is what each of the agent's version checks costs.
func (p *Provider) current(ctx context.Context) (map[string]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(p.path); err == nil {
		s := stampOf(fi)
		p.mu.Lock()
		versions := p.versions
		same := versions != nil && s == p.stamp && s != (stamp{})
		p.mu.Unlock()
		if same {
			return versions, nil
		}
	}
	if _, err := p.read(ctx); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.versions, nil
}

// read decrypts the file and records the versions in it with the stamp
// taken from the same descriptor.
func (p *Provider) read(ctx context.Context) (*vaultfile.Vault, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(p.path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("vault %s: %w", p.path, vaultfile.ErrNotExist)
		}
		return nil, fmt.Errorf("vault %s: %w", p.path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("vault %s: %w", p.path, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("vault %s: %w", p.path, err)
	}
	v, err := vaultfile.Parse(p.path, data, p.key)
	if err != nil {
		return nil, err
	}
	s := stampOf(fi)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.versions == nil || s != p.stamp || s == (stamp{}) {
		list := v.List()
		versions := make(map[string]uint64, len(list))
		for _, m := range list {
			versions[m.Name] = m.Version
		}
		p.versions, p.stamp = versions, s
	}
	return v, nil
}

func stampOf(fi os.FileInfo) stamp {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return stamp{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: fi.ModTime().UnixNano()}
	}
	return stamp{}
}
