package composecmd

import (
	"fmt"
	"strings"

	"github.com/dso-project/dso/internal/compose"
)

// invocation is a compose command line split into what dso reads itself
// (the flags that select the project, -c/--config, --dry-run) and what it
// passes on to `docker compose` unchanged.
type invocation struct {
	project compose.ProjectOptions
	config  string   // -c/--config
	dryRun  bool     // --dry-run
	help    bool     // -h/--help
	rest    []string // everything else, in order
}

// projectFlags take a value and select or load the project.
var projectFlags = map[string]string{
	"-f": "file", "--file": "file",
	"-p": "name", "--project-name": "name",
	"--project-directory": "dir",
	"--env-file":          "env",
	"--profile":           "profile",
	"-c":                  "config", "--config": "config",
}

// split reads args; after "--" everything is passed on.
func split(args []string) (invocation, error) {
	var inv invocation
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			inv.rest = append(inv.rest, args[i:]...)
			break
		}
		switch a {
		case "--dry-run":
			inv.dryRun = true
			continue
		case "-h", "--help":
			inv.help = true
			continue
		}
		name, value, hasValue := a, "", false
		if strings.HasPrefix(a, "--") {
			name, value, hasValue = strings.Cut(a, "=")
		} else if len(a) > 2 && a[0] == '-' && projectFlags[a[:2]] != "" {
			name, value, hasValue = a[:2], a[2:], true
		}
		kind, ok := projectFlags[name]
		if !ok {
			inv.rest = append(inv.rest, a)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return inv, fmt.Errorf("flag needs an argument: %s", name)
			}
			i++
			value = args[i]
		}
		switch kind {
		case "file":
			inv.project.Files = append(inv.project.Files, value)
		case "name":
			inv.project.Name = value
		case "dir":
			inv.project.ProjectDir = value
		case "env":
			inv.project.EnvFiles = append(inv.project.EnvFiles, value)
		case "profile":
			inv.project.Profiles = append(inv.project.Profiles, value)
		case "config":
			inv.config = value
		}
	}
	return inv, nil
}
