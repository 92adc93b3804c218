package composecmd

import (
	"context"
	"fmt"
	"slices"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/rotate"
)

// removesVolumes reports whether the arguments of `down` ask for the
// volumes to be removed too.
func removesVolumes(args []string) bool {
	return slices.ContainsFunc(args, func(a string) bool { return a == "-v" || a == "--volumes" || a == "--volumes=true" })
}

// anonymousVolumes lists the anonymous volumes of the project's containers,
// which `down -v` removes, as compose says it does ("anonymous volumes
// attached to containers"): see rotate.AnonymousVolumes.
func anonymousVolumes(ctx context.Context, f *cmdutil.Factory, project string) []string {
	docker, err := f.Docker()
	if err != nil {
		return nil
	}
	out, _ := rotate.AnonymousVolumes(ctx, docker, project)
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
