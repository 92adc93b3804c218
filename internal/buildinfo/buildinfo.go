// Package buildinfo holds the version and commit stamped into the binaries at
// build time (with -ldflags -X), for `docker dso version` and the plugin
// metadata.
package buildinfo

import "runtime"

// Set with -ldflags "-X github.com/dso-project/dso/internal/buildinfo.Version=… -X …Commit=…".
var (
	Version = "dev"
	Commit  = "unknown"
)

// GoVersion is the Go release the binary was built with.
func GoVersion() string { return runtime.Version() }
