package rotate

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"golang.org/x/sync/errgroup"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/backoff"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/state"
)

// Steps of a replacement, in the order they are taken. Each is journaled
// before it is taken.
const (
	StepCreate    = "create"       // create the new container under its temporary name
	StepStopOld   = "stop-old"     // stop-first: hold the proxy, stop the old container
	StepStart     = "start"        // start the new container and deliver its secrets
	StepHealth    = "wait-healthy" // wait until the new container is healthy (behind a proxy: while it gets its secrets)
	StepSwitch    = "switch"       // the proxy sends new connections to the new container
	StepDrain     = "drain"        // the old container's connections drain
	StepRemoveOld = "remove-old"   // stop and remove the old container
	StepRename    = "rename"       // the new container takes the compose name
)

// Steps lists the steps in order.
var Steps = []string{StepCreate, StepStopOld, StepStart, StepHealth, StepSwitch, StepDrain, StepRemoveOld, StepRename}

// committed reports whether a replacement journaled at step is past its
// commit point: the new container serves, so recovery finishes the swap.
func committed(step string) bool {
	switch step {
	case StepSwitch, StepDrain, StepRemoveOld, StepRename:
		return true
	}
	return false
}

// Labels of the proxy container and of services.
const (
	// LabelProxyFor is set on a proxy container: the service whose host
	// ports it owns.
	LabelProxyFor = compose.LabelProxyFor
	// LabelOrder overrides the order of a rolling service: start-first or
	// stop-first.
	LabelOrder = "dso.update.order"
)

// ErrInterrupted means the replacement stopped because the agent is
// stopping: the journal keeps its step, and the next agent recovers it.
var ErrInterrupted = errors.New("interrupted: the agent is stopping; the next agent start finishes or undoes it")

// ErrRemoved means the old container was removed before or during the
// rotation (docker compose down, docker rm) and nothing of the swap is
// left: there is nothing to rotate, and trying again would fail again.
var ErrRemoved = errors.New("the container was removed (docker compose down, docker rm): nothing to rotate")

// Job is one replacement.
type Job struct {
	// Journal is the rotation's journal entry, begun by the caller.
	Journal  uint64
	Old      string // ID of the container replaced
	Strategy Strategy
	// Replacing, when set, is called once the old container may be
	// replaced (see replaceable), before the first attempt: should it be
	// stopped and brought back, the agent gives it the values it had.
	Replacing func()
}

// tempSuffix matches the suffixes DSO gives temporary containers (and the
// ones earlier versions gave), so that a temporary name is never the base
// of another.
var tempSuffix = regexp.MustCompile(`(-dso-r?[0-9]+)+$`)

// CanonicalName is the compose name of a container, without any temporary
// suffix.
func CanonicalName(name string) string {
	return tempSuffix.ReplaceAllString(strings.TrimPrefix(name, "/"), "")
}

// journalSuffix is the suffix of this version's temporary names: the
// journal ID of the rotation that made the container.
var journalSuffix = regexp.MustCompile(`-dso-r([0-9]+)$`)

// JournalOf returns the journal ID in a temporary name.
func JournalOf(name string) (uint64, bool) {
	m := journalSuffix.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	id, err := strconv.ParseUint(m[1], 10, 64)
	return id, err == nil
}

// swap is one replacement in progress.
type swap struct {
	r        *Replacer
	job      Job
	old      container.InspectResponse
	rec      state.Rotation
	newID    string
	newIP    string // the new container's address the proxy uses
	oldStops bool   // the old container was stopped by this swap
	oldGoes  bool   // the old container is being stopped and removed: no way back
	switched bool   // the proxy may send new connections to the new container
	// others are the addresses of the service's other replicas, when
	// haveOthers: the switch sends new connections to them and the new one.
	others     []string
	haveOthers bool
}

// Replace replaces container job.Old by a new one with the same
// configuration and returns the new one's ID. On failure the old container
// is serving again and the error says why the new one failed.
func (r *Replacer) Replace(ctx context.Context, job Job) (string, error) {
	ins, err := r.Docker.ContainerInspect(ctx, job.Old, client.ContainerInspectOptions{})
	if notFound(err) {
		return "", ErrRemoved
	}
	if err != nil {
		return "", err
	}
	s := &swap{r: r, job: job, old: ins.Container}
	name := CanonicalName(s.old.Name)
	s.rec = state.Rotation{Name: name, TempName: fmt.Sprintf("%s-dso-r%d", name, job.Journal)}
	s.rec.Order, s.rec.Proxy = r.plan(ctx, s.old, job.Strategy)
	newID, err := s.run(ctx)
	if err == nil {
		return newID, nil
	}
	if ctx.Err() != nil {
		return "", ErrInterrupted
	}
	if s.oldGoes {
		// The old container is stopping or gone: the swap can only be
		// finished (the new one serves already).
		r.log().Warn("finishing the swap failed; trying again", "container", short(job.Old), "error", err)
		if ferr := s.persist(ctx, "finishing the swap", s.forward); ferr != nil {
			return "", ferr
		}
		return s.newID, nil
	}
	if uerr := s.persist(ctx, "bringing the old container back", s.rollback); uerr != nil {
		return "", uerr
	}
	return "", err
}

// persist runs fn (undoing or finishing the swap) again while it fails (the
// engine may be out of reach), until it works or the agent stops
// (ErrInterrupted: the journal keeps the step for the next start). A swap
// half done must not be journaled as finished: nothing would repair it.
func (s *swap) persist(ctx context.Context, what string, fn func(context.Context) error) error {
	b := backoff.New(s.r.clock(), s.r.retryBackoff(), 10*time.Second)
	for {
		err := fn(context.WithoutCancel(ctx))
		if err == nil {
			return nil
		}
		s.r.log().Warn(what+" failed; trying again", "container", short(s.old.ID), "error", err)
		if b.Wait(ctx) != nil {
			return ErrInterrupted
		}
	}
}

// plan chooses the order and finds the proxy of the old container's
// service. Restart is stop-first when the service has host ports (behind
// its proxy, which holds new connections meanwhile, or published by Docker,
// which cannot bind them twice), rolling when it is stateful; else the old
// container serves until the new one is healthy.
func (r *Replacer) plan(ctx context.Context, old container.InspectResponse, strategy Strategy) (order, proxy string) {
	if r.Proxy != nil && (strategy == Rolling || strategy == Restart) {
		proxy = r.findProxy(ctx, old)
	}
	order = string(StartFirst)
	switch {
	case publishesHostPorts(old.HostConfig):
		order = string(StopFirst) // two containers cannot bind one host port
	case old.HostConfig != nil && (old.HostConfig.NetworkMode.IsContainer() || old.HostConfig.NetworkMode.IsHost()):
		order = string(StopFirst) // two applications in one network namespace
	case staticAddress(old):
		order = string(StopFirst) // one address cannot be on two containers
	case strategy == Restart:
		if proxy != "" {
			order = string(StopFirst)
		}
	case Order(old.Config.Labels[LabelOrder]) == StopFirst:
		order = string(StopFirst)
	case Order(old.Config.Labels[LabelOrder]) == StartFirst:
	case stateful(old):
		order = string(StopFirst)
	}
	return order, proxy
}

// findProxy returns the running proxy container of old's service, or "".
// Compose names it PROJECT-SERVICE-dso-proxy-1: one inspect, where a
// listing costs the engine a look at every container.
func (r *Replacer) findProxy(ctx context.Context, old container.InspectResponse) string {
	l := old.Config.Labels
	name := l[labelProject] + "-" + compose.ProxyService(l[labelService]) + "-1"
	if ins, err := r.Docker.ContainerInspect(ctx, name, client.ContainerInspectOptions{}); err == nil {
		c := ins.Container
		if c.Config != nil && c.Config.Labels[labelProject] == l[labelProject] && c.Config.Labels[LabelProxyFor] == l[labelService] &&
			c.State != nil && c.State.Running {
			return c.ID
		}
	}
	f := client.Filters{}.Add("label", labelProject+"="+l[labelProject], LabelProxyFor+"="+l[labelService]).Add("status", "running")
	list, err := r.Docker.ContainerList(ctx, client.ContainerListOptions{Filters: f})
	if err != nil || len(list.Items) == 0 {
		return ""
	}
	return list.Items[0].ID
}

const (
	labelProject = "com.docker.compose.project"
	labelService = "com.docker.compose.service"
)

// step journals the step about to be taken.
func (s *swap) step(step string) error {
	return s.stepWith(step, nil)
}

// stepWith journals the step about to be taken and what fn writes, in one
// transaction.
func (s *swap) stepWith(step string, fn func(*state.Rotation)) error {
	err := s.r.Journal.UpdateRotation(s.job.Journal, func(e *state.Rotation) {
		if fn != nil {
			fn(e)
		}
		e.Step = step
		if s.newID != "" {
			e.NewContainer = s.newID
		}
	})
	if err != nil {
		return fmt.Errorf("journal step %s: %w", step, err)
	}
	if s.r.BeforeStep != nil {
		s.r.BeforeStep(s.job.Strategy, step)
	}
	return nil
}

func (s *swap) run(ctx context.Context) (string, error) {
	r, old := s.r, s.old
	// The plan and the first step, in one transaction.
	if err := s.stepWith(StepCreate, func(e *state.Rotation) {
		e.Name, e.TempName, e.Order, e.Proxy = s.rec.Name, s.rec.TempName, s.rec.Order, s.rec.Proxy
	}); err != nil {
		return "", err
	}
	pinned := make(chan error, 1)
	if s.rec.Proxy != "" {
		// The new container answers to the service's name too, from its
		// start: until the switch the proxy sends new connections to the
		// replicas that serve now, by address. The engine creates the
		// container meanwhile; it starts once the proxy is pinned.
		go func() { pinned <- r.pin(ctx, old, s.rec.Proxy) }()
	} else {
		pinned <- nil
	}
	err := s.create(ctx)
	if perr := <-pinned; err == nil {
		err = perr
	}
	if err != nil {
		return "", err
	}
	if s.rec.Order == string(StopFirst) {
		if err := s.stopFirst(ctx); err != nil {
			return "", err
		}
	} else {
		if err := s.step(StepStart); err != nil {
			return "", err
		}
		if err := s.start(ctx); err != nil {
			return "", err
		}
	}
	deliver := func(ctx context.Context) error {
		if err := r.Deliver(ctx, s.newID); err != nil {
			return fmt.Errorf("deliver to the new container: %w", err)
		}
		return nil
	}
	healthy := func(ctx context.Context) error {
		if s.rec.Proxy != "" {
			var err error
			if s.newIP, err = r.ipFor(ctx, s.newID, s.rec.Proxy); err != nil {
				return err
			}
		}
		return r.waitHealthy(ctx, s.newID, old, s.rec.Proxy, s.newIP)
	}
	if s.rec.Proxy == "" || hasHealthcheck(old) {
		if err := deliver(ctx); err != nil {
			return "", err
		}
		if err := s.step(StepHealth); err != nil {
			return "", err
		}
		if err := healthy(ctx); err != nil {
			return "", err
		}
		return s.finish(ctx)
	}
	// The application starts once it has its secrets, so the probe of its
	// ports runs during the delivery, and passes as soon as it listens.
	if err := s.step(StepHealth); err != nil {
		return "", err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return deliver(gctx) })
	g.Go(func() error { return healthy(gctx) })
	g.Go(func() error {
		// The switch's other backends, looked up meanwhile.
		others, err := r.replicaIPs(gctx, old, s.rec.Proxy, old.ID)
		s.others, s.haveOthers = others, err == nil
		return nil
	})
	if err := g.Wait(); err != nil {
		return "", err
	}
	return s.finish(ctx)
}

// stopFirst stops the old container (behind a proxy: new connections held,
// those in flight drained first) and starts the new one. The engine starts
// the new container while the old one stops, unless it must bind host
// ports the old one holds: its application waits for its secrets, which
// Deliver hands it only once the old one has stopped, so two of them never
// run at once. An old container with a long grace period (more than half
// of the time the new one's init waits for its secrets) is stopped first.
func (s *swap) stopFirst(ctx context.Context) error {
	r, old := s.r, s.old
	if err := s.step(StepStopOld); err != nil {
		return err
	}
	if s.rec.Proxy != "" {
		if err := r.Proxy.Hold(ctx, s.rec.Proxy); err != nil {
			return fmt.Errorf("hold new connections at the proxy: %w", err)
		}
		// Requests in flight end before the old container is told to
		// stop: none is cut in the middle.
		if oldIP, err := r.ipFor(ctx, old.ID, s.rec.Proxy); err == nil {
			if err := r.Proxy.Drain(ctx, s.rec.Proxy, oldIP, r.drainTimeout()); err != nil {
				r.log().Warn("draining the old container's connections failed", "container", short(old.ID), "error", err)
			}
		}
	}
	// Docker's host ports and an address of its own are taken when the
	// new container starts: the old one must have stopped.
	if publishesHostPorts(old.HostConfig) || staticAddress(old) || r.Defer == nil || stopGrace(old) > initproc.DefaultTimeout/2 {
		if err := s.stopOld(ctx); err != nil {
			return err
		}
		if err := s.step(StepStart); err != nil {
			return err
		}
		return s.start(ctx)
	}
	if err := s.step(StepStart); err != nil {
		return err
	}
	r.Defer(s.newID)
	// A failed start does not cut the stop short: the old container is
	// either running or stopped when the swap is undone, not stopping.
	var stopErr error
	var wg sync.WaitGroup
	wg.Go(func() { stopErr = s.stopOld(ctx) })
	startErr := s.start(ctx)
	wg.Wait()
	if startErr != nil {
		return startErr
	}
	return stopErr
}

// stopOld stops the old container with its own signal and grace period.
func (s *swap) stopOld(ctx context.Context) error {
	s.oldStops = true
	if _, err := s.r.Docker.ContainerStop(ctx, s.old.ID, client.ContainerStopOptions{}); err != nil {
		return fmt.Errorf("stop the old container: %w", err)
	}
	return nil
}

// stopGrace is how long c's stop waits for it before killing it: its own
// stop timeout, else the engine's default (10 s).
func stopGrace(c container.InspectResponse) time.Duration {
	if c.Config != nil && c.Config.StopTimeout != nil {
		return time.Duration(*c.Config.StopTimeout) * time.Second
	}
	return 10 * time.Second
}

// start starts the new container.
func (s *swap) start(ctx context.Context) error {
	if _, err := s.r.Docker.ContainerStart(ctx, s.newID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start the new container: %w", err)
	}
	return nil
}

// pin sends the proxy's new connections to the replicas of old's service
// that serve now, by address.
func (r *Replacer) pin(ctx context.Context, old container.InspectResponse, proxy string) error {
	ips, err := r.replicaIPs(ctx, old, proxy, "")
	if err != nil {
		return err
	}
	if err := r.Proxy.Set(ctx, proxy, ips); err != nil {
		return fmt.Errorf("pin the proxy to the serving containers: %w", err)
	}
	return nil
}

// create creates the new container, not started, on the old one's
// networks.
func (s *swap) create(ctx context.Context) error {
	r, old := s.r, s.old
	nets, first := endpoints(old)
	cfg := newConfig(old)
	if img, err := r.Docker.ImageInspect(ctx, cfg.Image); (err != nil || img.ID != old.Image) && old.Image != "" {
		// The image's name now names another image (pulled or built
		// since): a rotation changes secrets, not the application.
		r.log().Info("the image's name now names another image; the new container runs the old container's", "image", cfg.Image, "id", old.Image)
		cfg.Image = old.Image
	}
	opts := client.ContainerCreateOptions{Name: s.rec.TempName, Config: cfg, HostConfig: newHostConfig(old), NetworkingConfig: first}
	created, err := r.Docker.ContainerCreate(ctx, opts)
	if cerrdefs.IsConflict(err) {
		// A container left under the temporary name by an earlier attempt
		// of this rotation is not ours to keep.
		r.Docker.ContainerRemove(ctx, s.rec.TempName, client.ContainerRemoveOptions{Force: true})
		created, err = r.Docker.ContainerCreate(ctx, opts)
	}
	if err != nil {
		return fmt.Errorf("create the new container: %w", err)
	}
	s.newID = created.ID
	for netName, ep := range nets {
		if _, err := r.Docker.NetworkConnect(ctx, netName, client.NetworkConnectOptions{Container: s.newID, EndpointConfig: ep}); err != nil {
			return fmt.Errorf("connect the new container to %s: %w", netName, err)
		}
	}
	return nil
}

// finish takes the steps after the commit point; recovery runs it too.
func (s *swap) finish(ctx context.Context) (string, error) {
	r, oldID := s.r, s.old.ID
	if s.rec.Proxy != "" {
		if err := s.step(StepSwitch); err != nil {
			return "", err
		}
		others := s.others
		if !s.haveOthers {
			var err error
			if others, err = r.replicaIPs(ctx, s.old, s.rec.Proxy, s.old.ID); err != nil {
				return "", err
			}
		}
		s.switched = true // even when Set fails: its order may have reached the proxy
		if err := r.Proxy.Set(ctx, s.rec.Proxy, append(others, s.newIP)); err != nil {
			return "", fmt.Errorf("switch the proxy to the new container: %w", err)
		}
		if oldIP, err := r.ipFor(ctx, oldID, s.rec.Proxy); err == nil && !s.oldStops {
			if err := s.step(StepDrain); err != nil {
				return "", err
			}
			if err := r.Proxy.Drain(ctx, s.rec.Proxy, oldIP, r.drainTimeout()); err != nil {
				r.log().Warn("draining the old container's connections failed", "container", short(oldID), "error", err)
			}
		}
	}
	// A new container that died since it was found healthy (its
	// application crashed) is no reason to lose the old one, which still
	// runs (start-first) or can start again: the swap is undone instead.
	ins, err := r.Docker.ContainerInspect(ctx, s.newID, client.ContainerInspectOptions{})
	if err != nil {
		return "", fmt.Errorf("inspect the new container: %w", err)
	}
	if err := stopped(ins.Container.State); err != nil {
		return "", fmt.Errorf("after the switch: %w", err)
	}
	if err := s.step(StepRemoveOld); err != nil {
		return "", err
	}
	s.oldGoes = true
	if oldID != "" {
		// Its own stop signal and grace period, then gone.
		if _, err := r.Docker.ContainerStop(ctx, oldID, client.ContainerStopOptions{}); err != nil && !notFound(err) {
			return "", fmt.Errorf("stop the old container: %w", err)
		}
		if _, err := r.Docker.ContainerRemove(ctx, oldID, client.ContainerRemoveOptions{Force: true}); err != nil && !notFound(err) {
			return "", fmt.Errorf("remove the old container: %w", err)
		}
	}
	if err := s.step(StepRename); err != nil {
		return "", err
	}
	if err := r.rename(ctx, s.newID, s.rec.Name); err != nil {
		return "", err
	}
	if s.rec.Proxy != "" {
		// Back to the service's name: the project network resolves it to
		// the replicas that run, whatever compose does to them later.
		if err := r.Proxy.Set(ctx, s.rec.Proxy, []string{s.old.Config.Labels[labelService]}); err != nil {
			return "", fmt.Errorf("point the proxy at the service: %w", err)
		}
	}
	return s.newID, nil
}

// forward finishes the swap from a step past the switch, as recovery
// does: the new container is started again first if it stopped.
func (s *swap) forward(ctx context.Context) error {
	if err := s.r.startAgain(ctx, s.newID); err != nil {
		return err
	}
	_, err := s.finish(ctx)
	return err
}

// rollback removes the new container and brings the old one back.
func (s *swap) rollback(ctx context.Context) error {
	r := s.r
	if s.switched && !s.oldStops {
		// The old container still serves, and the proxy sends new
		// connections to the new one: they go back to the serving replicas
		// and the new one's connections drain before it goes, as the old
		// one's do in a swap, instead of being cut.
		ips, err := r.replicaIPs(ctx, s.old, s.rec.Proxy, "")
		if err != nil && !notFound(err) {
			return err
		}
		if len(ips) > 0 {
			if err := r.Proxy.Set(ctx, s.rec.Proxy, ips); err != nil && !notFound(err) {
				return fmt.Errorf("point the proxy back at the old container: %w", err)
			}
			if err := r.Proxy.Drain(ctx, s.rec.Proxy, s.newIP, r.drainTimeout()); err != nil {
				r.log().Warn("draining the new container's connections failed", "container", short(s.newID), "error", err)
			}
		}
	}
	var errs []error
	if s.newID != "" {
		if _, err := r.Docker.ContainerRemove(ctx, s.newID, client.ContainerRemoveOptions{Force: true}); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("remove the new container: %w", err))
		}
	} else {
		r.Docker.ContainerRemove(ctx, s.rec.TempName, client.ContainerRemoveOptions{Force: true})
	}
	if s.oldStops {
		switch err := r.startAgain(ctx, s.old.ID); {
		case notFound(err):
			// Removed meanwhile (docker compose down, docker rm): there is
			// nothing to bring back, and trying again would never end.
			r.log().Warn("the old container was removed during the rotation; nothing to bring back", "container", short(s.old.ID))
		case err != nil:
			errs = append(errs, err)
		}
	}
	if s.rec.Proxy != "" {
		// A proxy removed meanwhile has nothing to point back.
		if err := r.Proxy.Set(ctx, s.rec.Proxy, []string{s.old.Config.Labels[labelService]}); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("point the proxy back at the service: %w", err))
		}
	}
	return errors.Join(errs...)
}

// startAgain starts a container again (when it is not running) and hands
// it its secrets.
func (r *Replacer) startAgain(ctx context.Context, id string) error {
	ins, err := r.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect container %s: %w", short(id), err)
	}
	if ins.Container.State != nil && ins.Container.State.Running {
		return nil
	}
	if _, err := r.Docker.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start container %s again: %w", short(id), err)
	}
	if err := r.Deliver(ctx, id); err != nil {
		return fmt.Errorf("give container %s its secrets again: %w", short(id), err)
	}
	return nil
}

// rename gives container id the name, unless it has it already.
func (r *Replacer) rename(ctx context.Context, id, name string) error {
	ins, err := r.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect the new container: %w", err)
	}
	if strings.TrimPrefix(ins.Container.Name, "/") == name {
		return nil
	}
	if _, err := r.Docker.ContainerRename(ctx, id, client.ContainerRenameOptions{NewName: name}); err != nil {
		return fmt.Errorf("give the new container the name %s: %w", name, err)
	}
	return nil
}

// replicaIPs returns the addresses of the running containers of old's
// service under their compose names (not temporary ones), less the one
// with ID except.
func (r *Replacer) replicaIPs(ctx context.Context, old container.InspectResponse, proxy, except string) ([]string, error) {
	l := old.Config.Labels
	f := client.Filters{}.Add("label", labelProject+"="+l[labelProject], labelService+"="+l[labelService]).Add("status", "running")
	list, err := r.Docker.ContainerList(ctx, client.ContainerListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list the replicas: %w", err)
	}
	var ips []string
	for _, c := range list.Items {
		if c.ID == except || len(c.Names) == 0 || CanonicalName(c.Names[0]) != strings.TrimPrefix(c.Names[0], "/") {
			continue
		}
		ip, err := r.ipFor(ctx, c.ID, proxy)
		if err != nil {
			return nil, err
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// ipFor returns the address of container id on a network it shares with
// the proxy.
func (r *Replacer) ipFor(ctx context.Context, id, proxy string) (string, error) {
	ins, err := r.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return "", err
	}
	p, err := r.Docker.ContainerInspect(ctx, proxy, client.ContainerInspectOptions{})
	if err != nil {
		return "", fmt.Errorf("inspect the proxy: %w", err)
	}
	if ins.Container.NetworkSettings == nil || p.Container.NetworkSettings == nil {
		return "", fmt.Errorf("container %s shares no network with its proxy", short(id))
	}
	names := make([]string, 0, len(ins.Container.NetworkSettings.Networks))
	for n := range ins.Container.NetworkSettings.Networks {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		ep := ins.Container.NetworkSettings.Networks[n]
		if _, shared := p.Container.NetworkSettings.Networks[n]; shared && ep != nil && ep.IPAddress.IsValid() {
			return ep.IPAddress.String(), nil
		}
	}
	return "", fmt.Errorf("container %s shares no network with its proxy", short(id))
}

func (r *Replacer) drainTimeout() time.Duration {
	if r.DrainTimeout <= 0 {
		return 30 * time.Second
	}
	return r.DrainTimeout
}

func publishesHostPorts(hc *container.HostConfig) bool {
	if hc == nil {
		return false
	}
	for _, bindings := range hc.PortBindings {
		if len(bindings) > 0 {
			return true
		}
	}
	return false
}

// staticAddress reports whether the container has an address of its own
// on a network (compose's ipv4_address, ipv6_address).
func staticAddress(c container.InspectResponse) bool {
	if c.NetworkSettings == nil {
		return false
	}
	for _, ep := range c.NetworkSettings.Networks {
		if ep != nil && ep.IPAMConfig != nil && (ep.IPAMConfig.IPv4Address.IsValid() || ep.IPAMConfig.IPv6Address.IsValid()) {
			return true
		}
	}
	return false
}

// stateful reports whether a container writes to a volume or a bind mount
// (not the init's read-only bind mount, nor tmpfs): two of them must never
// run at once.
func stateful(c container.InspectResponse) bool {
	for _, m := range c.Mounts {
		if (m.Type == "volume" || m.Type == "bind") && m.RW {
			return true
		}
	}
	return false
}

func notFound(err error) bool { return cerrdefs.IsNotFound(err) }
