package composecmd

import (
	"github.com/spf13/cobra"

	"github.com/dso-project/dso/internal/cmdutil"
)

// passed are the compose subcommands that need no wiring: they act on the
// containers compose already made (started again, the agent redelivers).
var passed = []struct{ name, short string }{
	{"down", "Stop and remove the project's containers and networks"},
	{"ps", "List the project's containers"},
	{"logs", "Show the logs of the project's containers"},
	{"stop", "Stop the project's containers"},
	{"start", "Start the project's containers (the agent delivers their secrets)"},
	{"restart", "Restart the project's containers (the agent delivers their secrets)"},
	{"pull", "Pull the project's images"},
	{"build", "Build the project's images"},
	{"config", "Show the project as compose loads it (references, not values)"},
	{"images", "List the images of the project's containers"},
	{"top", "Show the processes of the project's containers"},
	{"kill", "Kill the project's containers"},
	{"rm", "Remove the project's stopped containers"},
	{"pause", "Pause the project's containers"},
	{"unpause", "Unpause the project's containers"},
	{"events", "Stream the project's container events"},
	{"port", "Print the public port of a service's port binding"},
	{"exec", "Run a command in a running service container"},
}

// topLevel are the compose commands also offered as `docker dso NAME`.
var topLevel = map[string]bool{"up": true, "down": true, "ps": true, "logs": true, "stop": true, "start": true, "restart": true, "pull": true}

// GroupID groups the compose commands in `docker dso --help`.
const GroupID = "compose"

// Commands returns the compose commands for the top level of `docker dso`:
// `compose` with every subcommand, and the common ones directly.
func Commands(f *cmdutil.Factory) []*cobra.Command {
	cmds := []*cobra.Command{NewCmdCompose(f)}
	for _, c := range subcommands(f) {
		if topLevel[c.Name()] {
			cmds = append(cmds, c)
		}
	}
	for _, c := range cmds {
		c.GroupID = GroupID
	}
	return cmds
}

// NewCmdCompose returns `docker dso compose SUBCOMMAND`, the same commands
// under the name the seed uses (`docker dso compose up`).
func NewCmdCompose(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "compose",
		Short: "Run a Docker Compose command on the project, with its secrets",
	}
	cmd.AddCommand(subcommands(f)...)
	return cmd
}

func subcommands(f *cmdutil.Factory) []*cobra.Command {
	cmds := []*cobra.Command{NewCmdUp(f, "up", nil), NewCmdUp(f, "create", nil), NewCmdUp(f, "run", nil)}
	for _, p := range passed {
		name := p.name
		cmds = append(cmds, &cobra.Command{
			Use:                name + " [OPTIONS] [ARGS...]",
			Short:              p.short,
			Long:               p.short + ".\n\nPassed to 'docker compose " + name + "' with the project loaded as 'docker dso up' loads it.",
			DisableFlagParsing: true,
			RunE: func(cmd *cobra.Command, args []string) error {
				return passthrough(cmd.Context(), f, name, args)
			},
		})
	}
	return cmds
}
