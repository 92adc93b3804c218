package composecmd

import (
	"context"
	"fmt"
	"regexp"
	"slices"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/cmdutil"
)

// anonymousName is the name the engine gives an anonymous volume.
var anonymousName = regexp.MustCompile(`^[0-9a-f]{64}$`)

// removesVolumes reports whether the arguments of `down` ask for the
// volumes to be removed too.
func removesVolumes(args []string) bool {
	return slices.ContainsFunc(args, func(a string) bool { return a == "-v" || a == "--volumes" || a == "--volumes=true" })
}

// anonymousVolumes lists the anonymous volumes mounted by the project's
// containers. `down -v` removes them, as compose says it does ("anonymous
// volumes attached to containers"), but the engine removes with a container
// only the volumes that were anonymous at its creation: a rotation's
// replacement took the old container's by name (as compose's own recreate
// does), and they would stay behind.
func anonymousVolumes(ctx context.Context, f *cmdutil.Factory, project string) []string {
	docker, err := f.Docker()
	if err != nil {
		return nil
	}
	list, err := docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", "com.docker.compose.project="+project)})
	if err != nil {
		return nil
	}
	var out []string
	for _, c := range list.Items {
		for _, m := range c.Mounts {
			if m.Type == "volume" && anonymousName.MatchString(m.Name) && !slices.Contains(out, m.Name) {
				out = append(out, m.Name)
			}
		}
	}
	return out
}

// removeVolumes removes the volumes that `down -v` left (the engine
// removed the others with their containers).
func removeVolumes(ctx context.Context, f *cmdutil.Factory, names []string) error {
	if len(names) == 0 {
		return nil
	}
	docker, err := f.Docker()
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, err := docker.VolumeRemove(ctx, n, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("removing anonymous volume %s of the project: %w", n, err)
		}
	}
	return nil
}
