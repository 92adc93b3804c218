package watch

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/dso-project/dso/internal/clock"
)

// DefaultFileInterval is how often WatchFile looks at the file when no
// notification came.
const DefaultFileInterval = 250 * time.Millisecond

// WatchFile calls onChange each time the file at path changes: its content
// is replaced (new inode, as an atomic rename does), rewritten (size or
// modification time), or it appears or disappears. It returns nil when ctx
// is cancelled.
//
// It looks at the file (stat) when the kernel says something happened to
// that name in its directory (fsnotify: inotify, kqueue), so a change is
// seen at once; the directory is watched, not the file, because the local
// vault is replaced by rename, which ends a watch on the file itself. It
// also looks every interval (DefaultFileInterval when 0) whatever it was
// told: bind mounts, network and overlay filesystems can miss notifications,
// and a directory that cannot be watched leaves the polling alone.
func WatchFile(ctx context.Context, clk clock.Clock, path string, interval time.Duration, onChange func()) error {
	return watchFile(ctx, clk, path, interval, true, onChange)
}

// watchFile is WatchFile; notified false leaves the polling alone (the
// polling's test).
func watchFile(ctx context.Context, clk clock.Clock, path string, interval time.Duration, notified bool, onChange func()) error {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if interval <= 0 {
		interval = DefaultFileInterval
	}
	path = filepath.Clean(path)
	last, err := statID(path)
	if err != nil {
		return err
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if notified {
		if w, err := fsnotify.NewWatcher(); err == nil {
			defer w.Close()
			if w.Add(filepath.Dir(path)) == nil {
				events, errs = w.Events, w.Errors
			}
		}
	}
	for {
		t := clk.TimerAt(clk.Now().Add(interval))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		case ev := <-events:
			t.Stop()
			if filepath.Clean(ev.Name) != path {
				continue
			}
		case <-errs:
			t.Stop() // notifications were lost (a full queue): look now
		}
		cur, err := statID(path)
		if err != nil {
			return err
		}
		if cur != last {
			last = cur
			onChange()
		}
	}
}

type fileID struct {
	exists   bool
	dev, ino uint64
	size     int64
	mtime    int64
	ctime    int64
}

func statID(path string) (fileID, error) {
	// unix.Stat_t names the times alike on Linux and macOS (syscall's does not).
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	if errors.Is(err, fs.ErrNotExist) {
		return fileID{}, nil
	}
	if err != nil {
		return fileID{}, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return fileID{exists: true, dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}
