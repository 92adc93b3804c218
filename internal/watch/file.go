package watch

import (
	"context"
	"errors"
	"io/fs"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dso-project/dso/internal/clock"
)

// DefaultFileInterval is how often WatchFile looks at the file.
const DefaultFileInterval = 250 * time.Millisecond

// WatchFile calls onChange each time the file at path changes: its content
// is replaced (new inode, as an atomic rename does), rewritten (size or
// modification time), or it appears or disappears. It looks every interval
// (DefaultFileInterval when 0) and returns nil when ctx is cancelled.
//
// It polls with stat rather than inotify: the local vault is replaced by
// rename, which ends an inotify watch on the file itself; stat works on any
// filesystem (bind mounts, network and overlay filesystems where inotify
// misses writes); four stat calls a second cost nothing; and a change is
// still seen well within a second.
func WatchFile(ctx context.Context, clk clock.Clock, path string, interval time.Duration, onChange func()) error {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if interval <= 0 {
		interval = DefaultFileInterval
	}
	last, err := statID(path)
	if err != nil {
		return err
	}
	for {
		t := clk.TimerAt(clk.Now().Add(interval))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
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
