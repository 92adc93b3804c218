package cli

import (
	"github.com/docker/cli/cli/command"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/iostreams"
)

// Factory carries what commands share: the streams and the way to reach the
// Docker engine. Commands take what they need from it when they run.
type Factory struct {
	IO *iostreams.IOStreams

	// dockerCLI is set when running as a Docker CLI plugin, so that the
	// engine connection honours `docker --context/--host`.
	dockerCLI command.Cli
}

// NewFactory returns a Factory over ios.
func NewFactory(ios *iostreams.IOStreams) *Factory {
	return &Factory{IO: ios}
}

// Docker returns a client for the Docker engine, negotiating the API version
// so that engines as old as API 1.41 work.
func (f *Factory) Docker() (client.APIClient, error) {
	if f.dockerCLI != nil {
		return f.dockerCLI.Client(), nil
	}
	return client.New(client.FromEnv)
}
