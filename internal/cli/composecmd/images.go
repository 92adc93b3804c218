package composecmd

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/compose"
)

// engineImages reads images through the engine for the wiring.
type engineImages struct {
	docker  client.APIClient
	project *types.Project
	// ids caches user lookups by image and user: services sharing an image
	// need one lookup container, not one each.
	ids map[[2]string][2]int
}

var _ compose.Images = engineImages{}

// EngineImages reads the images of project p's services through docker.
func EngineImages(docker client.APIClient, p *types.Project) compose.Images {
	return engineImages{docker: docker, project: p, ids: map[[2]string][2]int{}}
}

func (e engineImages) Config(ctx context.Context, svc types.ServiceConfig) (compose.Image, error) {
	name := imageName(e.project, svc)
	img, err := e.docker.ImageInspect(ctx, name)
	if err != nil {
		return compose.Image{}, fmt.Errorf("image %s: %w", name, err)
	}
	if img.Config == nil {
		return compose.Image{}, nil
	}
	exposed := make([]string, 0, len(img.Config.ExposedPorts))
	for p := range img.Config.ExposedPorts {
		exposed = append(exposed, string(p))
	}
	return compose.Image{Entrypoint: img.Config.Entrypoint, Cmd: img.Config.Cmd, User: img.Config.User, Exposed: exposed}, nil
}

// IDs resolves user ("name", "name:group", "uid", "uid:group") against the
// image's /etc/passwd and /etc/group, read from a container that is created
// for that and never started. The container gets an entrypoint of its own: an
// image with neither ENTRYPOINT nor CMD (any `docker import`ed image) cannot
// be created without one ("No command specified"); it never runs.
func (e engineImages) IDs(ctx context.Context, svc types.ServiceConfig, user string) (int, int, error) {
	name := imageName(e.project, svc)
	if ids, ok := e.ids[[2]string{name, user}]; ok {
		return ids[0], ids[1], nil
	}
	c, err := e.docker.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{
		Image:           name,
		Entrypoint:      []string{"/.dso/never-started"},
		NetworkDisabled: true,
	}})
	if err != nil {
		return 0, 0, fmt.Errorf("read users of image %s: %w", name, err)
	}
	defer e.docker.ContainerRemove(context.WithoutCancel(ctx), c.ID, client.ContainerRemoveOptions{Force: true})
	passwd := readImageFile(ctx, e.docker, c.ID, "/etc/passwd")
	group := readImageFile(ctx, e.docker, c.ID, "/etc/group")
	uid, gid, err := lookupIDs(user, passwd, group)
	if err == nil {
		e.ids[[2]string{name, user}] = [2]int{uid, gid}
	}
	return uid, gid, err
}

// lookupIDs resolves user as the engine does: a number needs no entry (its
// group is the entry's, else 0); a name must be in passwd.
func lookupIDs(user string, passwd, group []string) (int, int, error) {
	u, g, hasGroup := strings.Cut(user, ":")
	uid, gid := -1, 0
	if n, err := strconv.Atoi(u); err == nil {
		uid = n
	}
	for _, line := range passwd {
		f := strings.Split(line, ":")
		if len(f) < 4 {
			continue
		}
		if f[0] == u || uid >= 0 && f[2] == strconv.Itoa(uid) {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			break
		}
	}
	if uid < 0 {
		return 0, 0, fmt.Errorf("no user %q in the image's /etc/passwd", u)
	}
	if !hasGroup {
		return uid, gid, nil
	}
	if n, err := strconv.Atoi(g); err == nil {
		return uid, n, nil
	}
	for _, line := range group {
		f := strings.Split(line, ":")
		if len(f) >= 3 && f[0] == g {
			n, err := strconv.Atoi(f[2])
			if err == nil {
				return uid, n, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("no group %q in the image's /etc/group", g)
}

// readImageFile returns the lines of a small file of a container's image, or
// none when it is missing.
func readImageFile(ctx context.Context, docker client.APIClient, id, path string) []string {
	r, err := docker.CopyFromContainer(ctx, id, client.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		return nil
	}
	defer r.Content.Close()
	tr := tar.NewReader(r.Content)
	if _, err := tr.Next(); err != nil {
		return nil
	}
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(tr, 1<<20))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}
