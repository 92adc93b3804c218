package secretcache

import "golang.org/x/sys/unix"

// dontDump keeps buf out of core dumps (best effort).
func dontDump(buf []byte) { _ = unix.Madvise(buf, unix.MADV_DONTDUMP) }
