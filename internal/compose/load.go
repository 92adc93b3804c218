// Package compose loads a Docker Compose project exactly as `docker compose`
// does (compose-go: several -f files, -p, profiles, .env, interpolation),
// finds the secret references of its services, and computes the
// secret-free override that wires those services for delivery: the init
// binary mounted read-only, an entrypoint that runs it in front of the
// service's own entrypoint and command, a tmpfs for secret files, and labels
// naming the references. The override never holds a secret value.
package compose

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// ProjectOptions are the compose flags that select and load a project.
type ProjectOptions struct {
	Files      []string // -f/--file
	Name       string   // -p/--project-name
	ProjectDir string   // --project-directory
	EnvFiles   []string // --env-file
	Profiles   []string // --profile
}

// Load loads the project as `docker compose` would with the same flags and
// environment. The returned project has ComposeFiles set to the files
// actually read (found by default discovery or COMPOSE_FILE when no -f).
func Load(ctx context.Context, o ProjectOptions) (*types.Project, error) {
	opts, err := cli.NewProjectOptions(o.Files,
		cli.WithWorkingDirectory(o.ProjectDir),
		cli.WithOsEnv,
		cli.WithEnvFiles(o.EnvFiles...),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
		cli.WithDefaultProfiles(o.Profiles...),
		cli.WithName(o.Name),
	)
	if err != nil {
		return nil, err
	}
	if len(opts.ConfigPaths) == 0 {
		wd, _ := os.Getwd()
		return nil, fmt.Errorf("no compose file found in %s or its parents (compose.yaml, docker-compose.yml, ...); name one with -f", wd)
	}
	for _, f := range opts.ConfigPaths {
		if f == "-" {
			return nil, fmt.Errorf("reading the compose file from stdin (-f -) is not supported by dso; name a file")
		}
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, err
	}
	return p, nil
}
