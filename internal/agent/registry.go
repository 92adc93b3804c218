package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/deliver"
	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/state"
)

// registry holds the containers the agent may serve. Labels are no proof:
// whoever can create a container can copy a managed container's labels,
// mounts and entrypoint (all in `docker inspect`). So the agent serves a
// container only if a caller registered its ID over the socket (`docker dso
// up` creates the containers, registers them, then starts them), or the
// agent created it itself (a rotation's replacement). Registrations are
// kept in the state store: a container that Docker restarts keeps its ID
// and stays registered; a removed one is forgotten.
type registry struct {
	store *state.Store // nil: memory only

	mu  sync.Mutex
	ids map[string]state.Registered
}

func newRegistry(store *state.Store) (*registry, error) {
	r := &registry{store: store, ids: map[string]state.Registered{}}
	if store == nil {
		return r, nil
	}
	list, err := store.RegisteredContainers()
	if err != nil {
		return nil, fmt.Errorf("reading the registered containers: %w", err)
	}
	for _, rec := range list {
		r.ids[rec.ID] = rec
	}
	// Containers the agent delivered to before registrations existed.
	held, err := store.Containers()
	if err != nil {
		return nil, err
	}
	for _, c := range held {
		if _, ok := r.ids[c.ID]; !ok {
			r.ids[c.ID] = state.Registered{ID: c.ID, Project: c.Project, By: "agent", RegisteredAt: c.UpdatedAt}
		}
	}
	return r, nil
}

func (r *registry) add(rec state.Registered) error {
	rec.RegisteredAt = time.Now().UTC()
	if r.store != nil {
		if err := r.store.PutRegistered(rec); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.ids[rec.ID] = rec
	r.mu.Unlock()
	return nil
}

func (r *registry) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.ids[id]
	return ok
}

func (r *registry) drop(id string) {
	r.mu.Lock()
	delete(r.ids, id)
	r.mu.Unlock()
	if r.store != nil {
		r.store.DeleteRegistered(id)
	}
}

// registerContainers records the containers of a registration, after
// checking that each is a managed container of that project.
func (a *Agent) registerContainers(ctx context.Context, peer api.Peer, r api.Registration) error {
	for _, id := range r.Containers {
		ins, err := a.opts.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil {
			return fmt.Errorf("container %.64q: %w", id, err)
		}
		labels := ins.Container.Config.Labels
		if labels[compose.LabelManaged] != "true" || labels["com.docker.compose.project"] != r.Project {
			return fmt.Errorf("container %s is not a managed container of project %s", shortID(id), r.Project)
		}
		if _, takesSecrets := labels[compose.LabelRefs]; takesSecrets {
			refs, err := compose.RefsFromLabels(labels)
			if err != nil {
				return fmt.Errorf("container %s: %w", shortID(id), err)
			}
			if err := a.checkAccess(peer.UID, refs); err != nil {
				return fmt.Errorf("%w: container %s: %w", api.ErrRegistrationRefused, shortID(id), err)
			}
		}
		if err := a.registry.add(state.Registered{ID: ins.Container.ID, Project: r.Project, UID: peer.UID, By: "caller"}); err != nil {
			return err
		}
	}
	return nil
}

// adoptingDocker registers every container the agent creates through it:
// a rotation's replacement is the agent's own.
type adoptingDocker struct {
	Docker
	reg *registry
}

func (d adoptingDocker) ContainerCreate(ctx context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error) {
	res, err := d.Docker.ContainerCreate(ctx, opts)
	if err == nil {
		project := ""
		if opts.Config != nil {
			project = opts.Config.Labels["com.docker.compose.project"]
		}
		err = d.reg.add(state.Registered{ID: res.ID, Project: project, By: "agent"})
	}
	return res, err
}

// RegistrationGrace is how long a container that starts unregistered waits
// for its registration (`docker dso run` registers its one-off container
// while compose starts it) before it is refused.
const RegistrationGrace = 10 * time.Second

// notRegistered is what a refused container's own log says, through its init.
const notRegistered = "not registered with the dso agent: it gets no secrets (the agent serves the containers `docker dso up` created and registered, and its own)"

// admit waits, up to RegistrationGrace, for container id to be registered.
func (a *Agent) admit(ctx context.Context, id string) bool {
	deadline := a.opts.Clock.Now().Add(RegistrationGrace)
	for !a.registry.has(id) {
		if a.opts.Clock.Now().After(deadline) || clock.Sleep(ctx, a.opts.Clock, 100*time.Millisecond) != nil {
			return false
		}
	}
	return true
}

// refuse tells an unregistered container's init why it gets nothing (its
// log says so), and records the refusal, without values.
func (a *Agent) refuse(ctx context.Context, c container.InspectResponse, project, service string) error {
	id := c.ID
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := deliver.Send(dctx, a.opts.Docker, c, &initproc.Payload{Refused: "the dso agent refused this container: " + notRegistered})
	a.opts.Log.Warn("container refused: not registered", "container", shortID(id), "project", project, "service", service)
	a.emit(events.Event{Type: events.TypeDelivery, Level: "WARN", Container: shortID(id), Project: project, Service: service, Result: "refused", Message: "container " + notRegistered})
	if err != nil {
		return fmt.Errorf("container %s is not registered, and telling its init failed: %w", shortID(id), err)
	}
	return nil
}
