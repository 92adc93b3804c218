package composecmd

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/rotate"
)

// strategies decides the strategy of every service that takes secrets, as
// the agent will. A strategy that does not exist stops up here, not at the
// first rotation.
func strategies(p *types.Project, uses []compose.Use, cfg *config.Config) (map[string]config.Strategy, error) {
	out := map[string]config.Strategy{}
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
		out[u.Service] = d.Strategy
	}
	return out, nil
}

// prepareProxies makes sure the proxies of the plan can start: their image
// exists, and every fixed host port they publish is free or already
// published by this project.
func prepareProxies(ctx context.Context, docker client.APIClient, p *types.Project, plan *compose.Plan) error {
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
	list, err := docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", "com.docker.compose.project="+p.Name)})
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	ours := map[int]bool{}
	for _, c := range list.Items {
		for _, port := range c.Ports {
			ours[int(port.PublicPort)] = true
		}
		bound, _ := compose.ParseBindings(c.Labels[compose.LabelProxyListen])
		for _, b := range bound {
			ours[b.Port] = true
		}
	}
	for _, hp := range ports {
		if ours[hp.Port] {
			continue
		}
		ln, err := compose.Binding{IP: hp.IP, Port: hp.Port}.Listen()
		if err != nil {
			return cmdutil.WithExitCode(cmdutil.ExitConfig, inFiles(p, fmt.Errorf("service %q: host port %s is already in use on this host: %w", hp.Service, hp, err)))
		}
		ln.Close()
	}
	return nil
}

// seesProxies are the passed commands that act on the proxies too (and
// read nothing from stdin, which carries the stubs).
var seesProxies = map[string]bool{"down": true, "ps": true, "logs": true, "stop": true, "start": true, "restart": true,
	"kill": true, "rm": true, "pause": true, "unpause": true, "top": true, "port": true, "images": true, "events": true}

// proxyStubs is the override that shows compose the project's proxy
// services (which `up` added), so that down removes them, ps lists them
// with the ports a user can reach, and logs shows theirs. nil when the
// project has none (or the engine cannot say).
func proxyStubs(ctx context.Context, f *cmdutil.Factory, project string) []byte {
	docker, err := f.Docker()
	if err != nil {
		return nil
	}
	filter := client.Filters{}.Add("label", "com.docker.compose.project="+project, compose.LabelProxyFor)
	list, err := docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filter})
	if err != nil || len(list.Items) == 0 {
		return nil
	}
	services := map[string]any{}
	for _, c := range list.Items {
		services[c.Labels["com.docker.compose.service"]] = map[string]string{"image": compose.ProxyImage}
	}
	out, err := json.Marshal(map[string]any{"services": services})
	if err != nil {
		return nil
	}
	return out
}

// printBoundPorts follows the table of `ps` with the host ports the agent
// bound for the project's proxies (compose.LabelProxyListen), which Docker
// does not publish and compose's table so leaves out.
func printBoundPorts(ctx context.Context, f *cmdutil.Factory, project string) {
	docker, err := f.Docker()
	if err != nil {
		return
	}
	filter := client.Filters{}.Add("label", "com.docker.compose.project="+project, compose.LabelProxyListen).Add("status", "running")
	list, err := docker.ContainerList(ctx, client.ContainerListOptions{Filters: filter})
	if err != nil || len(list.Items) == 0 {
		return
	}
	fmt.Fprintln(f.IO.Out, "\nHost ports the dso agent binds for the proxies:")
	for _, c := range list.Items {
		bindings, err := compose.ParseBindings(c.Labels[compose.LabelProxyListen])
		if err != nil {
			continue
		}
		ports := make([]string, len(bindings))
		for i, b := range bindings {
			ports[i] = fmt.Sprintf("%s->%d/tcp", net.JoinHostPort(cmp.Or(b.IP, "0.0.0.0"), strconv.Itoa(b.Port)), b.Target)
		}
		name := strings.TrimPrefix(c.Names[0], "/")
		fmt.Fprintf(f.IO.Out, "  %s  %s\n", name, strings.Join(ports, ", "))
	}
}

// inFiles prefixes err, a fault of the project's definition, with the
// compose files it comes from.
func inFiles(p *types.Project, err error) error {
	if len(p.ComposeFiles) == 0 {
		return err
	}
	return fmt.Errorf("%s: %w", composeFiles(p), err)
}

// composeFiles names the project's compose files: relative to the working
// directory when they are in it.
func composeFiles(p *types.Project) string {
	files := make([]string, 0, len(p.ComposeFiles))
	wd, _ := os.Getwd()
	for _, f := range p.ComposeFiles {
		if rel, err := filepath.Rel(wd, f); wd != "" && err == nil && filepath.IsLocal(rel) {
			f = rel
		}
		files = append(files, f)
	}
	return strings.Join(files, ", ")
}
