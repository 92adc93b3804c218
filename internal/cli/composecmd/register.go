package composecmd

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/dso-project/dso/internal/agentctl"
	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/config"
)

// registerProject tells the agent, over its socket, which dso.yaml the
// containers of project use, before any of them is created: the agent
// takes that from a caller the kernel names, not from a container label.
// A local agent just started may take a moment to open its socket.
func registerProject(ctx context.Context, cfg *config.Config, project, cfgPath string) error {
	if cfgPath != "" {
		abs, err := filepath.Abs(cfgPath)
		if err != nil {
			return err
		}
		cfgPath = abs
	}
	reg := api.Registration{Project: project, Config: cfgPath}
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
