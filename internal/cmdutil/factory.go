// Package cmdutil holds what every command package shares: the Factory that
// carries streams and the engine connection, typed exit codes, and argument
// checks that turn mistakes into usage errors.
package cmdutil

import (
	"github.com/docker/cli/cli/command"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/iostreams"
)

// Factory carries what commands share: the streams, the --config flag and the
// way to reach the Docker engine. Commands take what they need when they run.
type Factory struct {
	IO *iostreams.IOStreams

	// ConfigPath is the value of the global -c/--config flag ("" when unset).
	ConfigPath string

	// DockerCLI is set when running as a Docker CLI plugin, so that the
	// engine connection honours `docker --context/--host`.
	DockerCLI command.Cli
}

// Docker returns a client for the Docker engine, negotiating the API version
// so that engines as old as API 1.41 work.
func (f *Factory) Docker() (client.APIClient, error) {
	if f.DockerCLI != nil {
		return f.DockerCLI.Client(), nil
	}
	return client.New(client.FromEnv)
}
