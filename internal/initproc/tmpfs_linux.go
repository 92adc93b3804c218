package initproc

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// checkTmpfs refuses to run when dir is not a tmpfs: secret files must never
// land on the container's disk.
func checkTmpfs(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("%s: %v (the service must have a tmpfs there; run it with `docker dso up`)", dir, err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("%s is not a tmpfs; refusing to put secrets on disk (run the service with `docker dso up`)", dir)
	}
	return nil
}
