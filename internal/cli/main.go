// Package cli builds the `docker dso` command tree, runs it as a Docker CLI
// plugin or standalone, and maps errors to exit codes in one place.
package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/docker/cli/cli-plugins/metadata"
	"github.com/docker/cli/cli-plugins/plugin"
	"github.com/docker/cli/cli/command"

	"github.com/dso-project/dso/internal/buildinfo"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/iostreams"
)

// Main runs the CLI with args (without the program name) and returns the
// process exit code.
func Main(args []string) int {
	ios := iostreams.System()
	if invokedAsPlugin(args) {
		return runPlugin(ios)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f := &cmdutil.Factory{IO: ios}
	root := NewRootCmd(f)
	root.SetArgs(args)
	return ExitCode(ios, root.ExecuteContext(ctx))
}

// invokedAsPlugin tells a `docker dso …` invocation (docker runs the binary
// with the plugin name first and sets the original-command variable, or asks
// for metadata) from a standalone `docker-dso …`.
func invokedAsPlugin(args []string) bool {
	if len(args) > 0 && args[0] == metadata.MetadataSubcommandName {
		return true
	}
	return os.Getenv("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND") != "" && len(args) > 0 && args[0] == "dso"
}

func runPlugin(ios *iostreams.IOStreams) int {
	dockerCli, err := command.NewDockerCli()
	if err != nil {
		return ExitCode(ios, err)
	}
	f := &cmdutil.Factory{IO: ios, DockerCLI: dockerCli}
	root := NewRootCmd(f)
	return ExitCode(ios, plugin.RunPlugin(dockerCli, root, PluginMetadata()))
}

// PluginMetadata is what `docker-dso docker-cli-plugin-metadata` reports.
func PluginMetadata() metadata.Metadata {
	return metadata.Metadata{
		SchemaVersion:    "0.1.0",
		Vendor:           "DSO project",
		Version:          buildinfo.Version,
		ShortDescription: "Secrets for Docker Compose, delivered at run time",
		URL:              "https://github.com/dso-project/dso",
	}
}
