//go:build !linux

package secretcache

// dontDump does nothing where there is no MADV_DONTDUMP (macOS): the agent
// turns core dumps off for the whole process there.
func dontDump([]byte) {}
