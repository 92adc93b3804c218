package systemd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// BootstrapOptions are the inputs of Bootstrap.
type BootstrapOptions struct {
	Root     string // "/" on a real host
	Provider string // aws, azure or vault
	Binary   string // absolute path of docker-dso, for ExecStart
	Run      Runner // Exec when nil
}

// Step is one thing Bootstrap did or left alone, for the user to read.
type Step struct {
	What string
	Done bool // false: it was already there and kept
}

// Bootstrap installs the agent under opts.Root. It can be run again: what
// exists is kept (dso.yaml is never overwritten), modes and owners are set
// again, and the unit file is rewritten.
func Bootstrap(ctx context.Context, opts BootstrapOptions) ([]Step, error) {
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Run == nil {
		opts.Run = Exec
	}
	if !filepath.IsAbs(opts.Binary) {
		return nil, fmt.Errorf("the agent binary path %q must be absolute", opts.Binary)
	}
	starter, err := StarterConfig(opts.Provider)
	if err != nil {
		return nil, err
	}
	at := func(p string) string { return filepath.Join(opts.Root, p) }
	var steps []Step

	gid, found, err := lookupGroup(opts.Root, GroupName)
	if err != nil {
		return nil, fmt.Errorf("looking up group %s: %w", GroupName, err)
	}
	created := !found
	if created {
		args := []string{"--system", GroupName}
		if opts.Root != "/" {
			args = append([]string{"--prefix", opts.Root}, args...)
		}
		if _, err := opts.Run(ctx, "groupadd", args...); err != nil {
			return steps, fmt.Errorf("creating group %s: %w", GroupName, err)
		}
		if gid, found, err = lookupGroup(opts.Root, GroupName); err != nil || !found {
			return steps, fmt.Errorf("group %s not found after groupadd (%v)", GroupName, err)
		}
	}
	steps = append(steps, Step{What: fmt.Sprintf("group %s (gid %d)", GroupName, gid), Done: created})

	for _, d := range []struct {
		path string
		mode fs.FileMode
		gid  int
	}{
		{ConfigDir, 0o775, gid},
		{RunDir, 0o750, gid},
		{StateDir, 0o700, 0},
		{filepath.Dir(UnitFile), 0o755, 0},
	} {
		made, err := ensureDir(at(d.path), d.mode, d.gid)
		if err != nil {
			return steps, err
		}
		steps = append(steps, Step{What: fmt.Sprintf("%s (%04o root:%s)", d.path, d.mode, groupLabel(d.gid)), Done: made})
	}

	cfg := at(ConfigFile)
	if _, err := os.Lstat(cfg); errors.Is(err, fs.ErrNotExist) {
		if err := writeFile(cfg, starter, 0o664, gid); err != nil {
			return steps, err
		}
		steps = append(steps, Step{What: fmt.Sprintf("%s for provider %s (0664 root:%s)", ConfigFile, opts.Provider, GroupName), Done: true})
	} else if err != nil {
		return steps, fmt.Errorf("%s: %w", cfg, err)
	} else {
		steps = append(steps, Step{What: ConfigFile + " (kept as it was)"})
	}

	if err := writeFile(at(UnitFile), []byte(Unit(opts.Binary)), 0o644, 0); err != nil {
		return steps, err
	}
	steps = append(steps, Step{What: UnitFile, Done: true})

	if opts.Root != "/" {
		if _, err := opts.Run(ctx, "systemctl", "--root="+opts.Root, "enable", UnitName); err != nil {
			return steps, err
		}
	} else {
		if Running(opts.Root) {
			if _, err := opts.Run(ctx, "systemctl", "daemon-reload"); err != nil {
				return steps, err
			}
		}
		if _, err := opts.Run(ctx, "systemctl", "enable", UnitName); err != nil {
			return steps, err
		}
	}
	steps = append(steps, Step{What: UnitName + " enabled", Done: true})
	return steps, nil
}

func groupLabel(gid int) string {
	if gid == 0 {
		return "root"
	}
	return GroupName
}

// ensureDir creates dir when missing, then sets its mode and owner
// (root:gid). It reports whether it created the directory.
func ensureDir(dir string, mode fs.FileMode, gid int) (bool, error) {
	made := false
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, mode); err != nil {
			return false, fmt.Errorf("creating %s: %w", dir, err)
		}
		made = true
	}
	if err := os.Chown(dir, 0, gid); err != nil {
		return made, fmt.Errorf("%s: %w", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return made, fmt.Errorf("%s: %w", dir, err)
	}
	return made, nil
}

// writeFile replaces path atomically with data, mode and owner root:gid.
func writeFile(path string, data []byte, mode fs.FileMode, gid int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Chown(tmp.Name(), 0, gid); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
