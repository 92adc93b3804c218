package composecmd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/rotate"
)

// rollingServices decides the strategy of every service that takes
// secrets, as the agent will, and returns those that rotate by rolling. A
// strategy that does not exist stops up here, not at the first rotation.
func rollingServices(p *types.Project, uses []compose.Use, cfg *config.Config) (map[string]bool, error) {
	out := map[string]bool{}
	for _, u := range uses {
		if _, done := out[u.Service]; done {
			continue
		}
		svc, err := p.GetService(u.Service)
		if err != nil {
			return nil, err
		}
		d, err := rotate.Decide(svc.Labels, cfg)
		if err != nil {
			return nil, fmt.Errorf("service %q, label %s: %w", u.Service, compose.LabelStrategy, err)
		}
		out[u.Service] = d.Strategy == rotate.Rolling
	}
	return out, nil
}

// prepareProxies makes sure the proxies of the plan can start: their image
// exists, and every fixed host port they publish is free or already
// published by this project.
func prepareProxies(ctx context.Context, docker client.APIClient, project string, plan *compose.Plan) error {
	ports := plan.HostPorts()
	hasProxy := len(ports) > 0
	for _, sp := range plan.Services {
		hasProxy = hasProxy || sp.Proxy != nil
	}
	if !hasProxy {
		return nil
	}
	if _, err := docker.ImageInspect(ctx, compose.ProxyImage); err != nil {
		// An empty image: the proxy is dso-init, bind-mounted. An empty tar
		// archive is two zero blocks.
		empty := bytes.NewReader(make([]byte, 1024))
		res, err := docker.ImageImport(ctx, client.ImageImportSource{Source: empty, SourceName: "-"}, compose.ProxyImage, client.ImageImportOptions{})
		if err != nil {
			return cmdutil.WithExitCode(cmdutil.ExitBackend, fmt.Errorf("create the proxy image %s: %w", compose.ProxyImage, err))
		}
		res.Close()
	}
	list, err := docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", "com.docker.compose.project="+project)})
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	ours := map[int]bool{}
	for _, c := range list.Items {
		for _, p := range c.Ports {
			ours[int(p.PublicPort)] = true
		}
	}
	for _, hp := range ports {
		if ours[hp.Port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(hp.IP, strconv.Itoa(hp.Port)))
		if err != nil {
			return cmdutil.WithExitCode(cmdutil.ExitConfig, fmt.Errorf("project %q: host port %s is already in use on this host: %w", project, hp, err))
		}
		ln.Close()
	}
	return nil
}
