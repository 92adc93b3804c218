package plugin

import (
	"maps"
	"strings"

	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/provider/retry"
)

// FromConfig builds the provider of a dso.yaml entry of type plugin. plugin
// is the plugin's type (binary dso-provider-TYPE in the plugin directories)
// or a path to the binary; auth.params.sha256 pins its checksum; the other
// auth.params go to the plugin's Configure.
func FromConfig(name string, pc config.Provider) (*Provider, error) {
	opts := Options{Name: name, Retry: retry.FromConfig(pc), Options: maps.Clone(pc.Auth.Params)}
	if strings.Contains(pc.Plugin, "/") {
		opts.Path = pc.Plugin
	} else {
		opts.Type = pc.Plugin
	}
	opts.SHA256 = opts.Options["sha256"]
	delete(opts.Options, "sha256")
	return New(opts)
}
