//go:build !linux

package initproc

import "fmt"

// checkTmpfs refuses everywhere but Linux: dso-init runs in Linux
// containers only, and only Linux can tell it a tmpfs from a disk here.
func checkTmpfs(dir string) error {
	return fmt.Errorf("%s: dso-init runs only in Linux containers", dir)
}
