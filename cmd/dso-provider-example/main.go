// Command dso-provider-example is an example external secret provider for
// dso, and the one the tests use: it serves secrets from the files of a
// directory. Copy it to start a plugin of your own.
//
// Options (in the provider's dso.yaml entry):
//
//	dir:     the directory (required); secret "a/b" is the file dir/a/b
//	allow:   comma-separated path patterns (path.Match) this provider may
//	         read; a path matching none is access denied; all if empty
//	latency: wait this long before each answer, to try dso's timeouts
//	         against a slow backend (a Go duration such as "2s")
//
// A secret's version is its file's inode, modification time and size, so a
// version check reads no value; replace files atomically (write, rename).
// A missing directory is an unreachable backend (an unmounted volume, say).
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/plugin"
)

func main() {
	plugin.Serve(&files{})
}

type files struct {
	dir     string
	allow   []string
	latency time.Duration
}

func (f *files) Configure(name string, opts map[string]string) error {
	for k := range opts {
		switch k {
		case "dir", "allow", "latency":
		default:
			return fmt.Errorf("unknown option %q (known: dir, allow, latency)", k)
		}
	}
	f.dir = opts["dir"]
	if f.dir == "" || !filepath.IsAbs(f.dir) {
		return fmt.Errorf("option dir %q: want an absolute directory path", f.dir)
	}
	if a := opts["allow"]; a != "" {
		for _, pat := range strings.Split(a, ",") {
			if _, err := path.Match(pat, ""); err != nil {
				return fmt.Errorf("option allow: pattern %q: %v", pat, err)
			}
			f.allow = append(f.allow, pat)
		}
	}
	if l := opts["latency"]; l != "" {
		d, err := time.ParseDuration(l)
		if err != nil || d < 0 {
			return fmt.Errorf("option latency %q: want a duration such as 2s", l)
		}
		f.latency = d
	}
	return nil
}

// file checks p and returns its file name, after the configured latency.
func (f *files) file(ctx context.Context, p string) (string, error) {
	if f.latency > 0 {
		select {
		case <-time.After(f.latency):
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if p == "" || path.Clean(p) != p || strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("path %q: want a clean relative path", p)
	}
	if len(f.allow) > 0 && !f.allowed(p) {
		return "", fmt.Errorf("path is outside the allow patterns: %w", provider.ErrDenied)
	}
	if _, err := os.Stat(f.dir); err != nil {
		return "", fmt.Errorf("directory %s: %w", f.dir, provider.ErrUnreachable)
	}
	return filepath.Join(f.dir, filepath.FromSlash(p)), nil
}

func (f *files) allowed(p string) bool {
	for _, pat := range f.allow {
		if ok, _ := path.Match(pat, p); ok {
			return true
		}
	}
	return false
}

func (f *files) Get(ctx context.Context, p string) (provider.Secret, error) {
	name, err := f.file(ctx, p)
	if err != nil {
		return provider.Secret{}, err
	}
	// Version first: if the file is replaced in between, the next check
	// sees a change and reads again.
	v, err := version(name)
	if err != nil {
		return provider.Secret{}, err
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return provider.Secret{}, classify(err)
	}
	return provider.Secret{Value: b, Version: v}, nil
}

func (f *files) Version(ctx context.Context, p string) (string, error) {
	name, err := f.file(ctx, p)
	if err != nil {
		return "", err
	}
	return version(name)
}

func version(name string) (string, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return "", classify(err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("not a regular file: %w", provider.ErrNotFound)
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%d-%d-%d", ino, fi.ModTime().UnixNano(), fi.Size()), nil
}

// classify gives a file error its class.
func classify(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return provider.ErrNotFound
	case errors.Is(err, fs.ErrPermission):
		return provider.ErrDenied
	}
	return err
}
