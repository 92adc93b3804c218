package composecmd

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/agentctl"
	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
)

// registration is what `up` tells the agent about a project.
type registration struct {
	cfg     *config.Config
	project string
	config  string // the dso.yaml up used
	docker  client.APIClient
}

// runRegistered runs compose sub (up, create or run) so that the agent
// learns, over its socket, the IDs of the containers compose creates before
// any of them starts: the agent serves registered containers only, never a
// container because of its labels, which anyone can copy. `up` becomes
// `create`, register, then `up --no-recreate` (the containers just created
// are started, not made again); `create` is followed by a registration;
// `run`, which creates and starts its one-off container in one step, is
// watched while it runs and its container registered as it appears (the
// agent waits a little for it).
func runRegistered(ctx context.Context, sub string, rest []string, reg registration, compose func(args ...string) error) error {
	since := time.Now().Add(-time.Second)
	switch sub {
	case "up":
		createArgs, upArgs := splitUp(rest)
		if err := compose(append([]string{"create"}, createArgs...)...); err != nil {
			return err
		}
		if err := reg.send(ctx, since); err != nil {
			return err
		}
		return compose(append([]string{"up"}, upArgs...)...)
	case "create":
		if err := compose(append([]string{"create"}, rest...)...); err != nil {
			return err
		}
		return reg.send(ctx, since)
	default:
		if err := reg.send(ctx, since); err != nil {
			return err
		}
		watchCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for watchCtx.Err() == nil {
				reg.send(watchCtx, since)
				select {
				case <-watchCtx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
		err := compose(append([]string{sub}, rest...)...)
		stop()
		<-done
		return err
	}
}

// upValueFlags are the flags of `compose up` that take a separate value.
var upValueFlags = map[string]bool{"--attach": true, "--exit-code-from": true, "--no-attach": true, "--pull": true, "--scale": true, "-t": true, "--timeout": true, "--wait-timeout": true}

// createFlags are the flags `compose create` shares with `up`.
var createFlags = map[string]bool{"--build": true, "--force-recreate": true, "--no-build": true, "--no-recreate": true, "--pull": true, "--quiet-pull": true, "--remove-orphans": true, "--scale": true, "-y": true, "--yes": true}

// recreateFlags decide what create makes; the up that follows creates
// nothing (--no-recreate), so they are not passed to it.
var recreateFlags = map[string]bool{"--build": true, "--force-recreate": true, "--always-recreate-deps": true, "--no-recreate": true, "-V": true, "--renew-anon-volumes": true, "--pull": true, "--remove-orphans": true}

// splitUp turns the arguments of `up` into those of the `create` that
// makes the containers and of the `up` that then starts them.
func splitUp(rest []string) (create, up []string) {
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		name, _, inline := strings.Cut(a, "=")
		args := []string{a}
		if strings.HasPrefix(a, "-") && !inline && upValueFlags[name] && i+1 < len(rest) {
			i++
			args = append(args, rest[i])
		}
		service := !strings.HasPrefix(a, "-")
		if service || createFlags[name] {
			create = append(create, args...)
		}
		if service || !recreateFlags[name] {
			up = append(up, args...)
		}
	}
	return create, append(up, "--no-recreate")
}

// send registers the project and the managed containers of it created since.
func (r registration) send(ctx context.Context, since time.Time) error {
	f := client.Filters{}.Add("label", "com.docker.compose.project="+r.project, compose.LabelManaged+"=true")
	list, err := r.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return cmdutil.WithExitCode(cmdutil.ExitBackend, err)
	}
	var ids []string
	for _, c := range list.Items {
		if c.Created >= since.Unix() {
			ids = append(ids, c.ID)
		}
	}
	return registerProject(ctx, r.cfg, r.project, r.config, ids)
}

// registerProject tells the agent, over its socket, which dso.yaml the
// containers of project use, and which containers it created: the agent
// takes that from a caller the kernel names, not from a container label.
// A local agent just started may take a moment to open its socket.
func registerProject(ctx context.Context, cfg *config.Config, project, cfgPath string, ids []string) error {
	if cfgPath != "" {
		abs, err := filepath.Abs(cfgPath)
		if err != nil {
			return err
		}
		cfgPath = abs
	}
	reg := api.Registration{Project: project, Config: cfgPath, Containers: ids}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := agentctl.Dial(cfg)
		unreachable := err != nil
		if err == nil {
			err = c.Register(ctx, reg)
			unreachable = errors.Is(err, api.ErrAgentNotRunning)
		}
		switch {
		case err == nil:
			return nil
		case !unreachable && strings.Contains(err.Error(), "404 Not Found"):
			return cmdutil.WithExitCode(cmdutil.ExitBackend, fmt.Errorf("the dso agent running is older than this plugin (it takes no registrations): stop it (`docker dso agent stop`, or restart dso-agent) and run this again: %w", err))
		case !unreachable:
			return cmdutil.WithExitCode(cmdutil.ExitConfig, fmt.Errorf("the dso agent refused project %s: %w", project, err))
		case time.Now().After(deadline) || ctx.Err() != nil:
			return cmdutil.WithExitCode(cmdutil.ExitBackend, fmt.Errorf("registering project %s with the dso agent: %w", project, err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
