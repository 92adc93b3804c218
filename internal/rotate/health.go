package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/clock"
)

// waitHealthy waits until the new container id is healthy: its healthcheck
// passes, else (behind a proxy) every proxied port accepts a connection,
// else it has kept running for Settle. It fails as soon as the container
// stops or is unhealthy. The wait is HealthTimeout, counted from the
// healthcheck's first run when there is one.
func (r *Replacer) waitHealthy(ctx context.Context, id string, old container.InspectResponse, proxy, ip string) error {
	timeout := r.HealthTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	settle := r.Settle
	if settle <= 0 {
		settle = 2 * time.Second
	}
	hasHealthcheck := hasHealthcheck(old)
	start := r.clock().Now()
	if hasHealthcheck {
		timeout += firstCheck(old.Config.Healthcheck)
	}
	deadline := start.Add(timeout)
	var probeErr error
	for {
		ins, err := r.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil {
			return err
		}
		st := ins.Container.State
		if err := stopped(st); err != nil {
			return err
		}
		switch {
		case hasHealthcheck && st.Health != nil && st.Health.Status == container.Unhealthy:
			return errors.New("the new container is unhealthy")
		case hasHealthcheck && st.Health != nil && st.Health.Status == container.Healthy:
			return nil
		case !hasHealthcheck && proxy != "":
			if probeErr = r.Proxy.Probe(ctx, proxy, ip, time.Second); probeErr == nil {
				return nil
			}
		case !hasHealthcheck && r.clock().Now().Sub(start) >= settle:
			return nil
		}
		if r.clock().Now().After(deadline) {
			if probeErr != nil {
				return fmt.Errorf("the new container did not accept connections within %s: %w", timeout, probeErr)
			}
			if hasHealthcheck {
				return fmt.Errorf("the new container was not healthy within %s of its start (its healthcheck runs first %s in, then agent.rotation.health_check_timeout)", timeout, firstCheck(old.Config.Healthcheck))
			}
			return fmt.Errorf("the new container was not healthy within %s", timeout)
		}
		if err := clock.Sleep(ctx, r.clock(), 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// firstCheck is when the engine first runs the healthcheck hc after a
// start: one interval (30 s unless set) in, the same for every engine (an
// engine older than API 1.44 ignores start_interval); the container is
// "starting" until then, whatever its application does.
func firstCheck(hc *container.HealthConfig) time.Duration {
	if hc.Interval > 0 {
		return hc.Interval
	}
	return 30 * time.Second
}

// hasHealthcheck reports whether c's image or service defines a
// healthcheck.
func hasHealthcheck(c container.InspectResponse) bool {
	hc := c.Config.Healthcheck
	return hc != nil && len(hc.Test) > 0 && hc.Test[0] != "NONE"
}

// stopped says why the new container, in state st, no longer runs (nil
// when it runs).
func stopped(st *container.State) error {
	if st != nil && st.Running && !st.Restarting {
		return nil
	}
	code := 0
	if st != nil {
		code = st.ExitCode
	}
	return fmt.Errorf("the new container stopped (exit code %d)", code)
}
