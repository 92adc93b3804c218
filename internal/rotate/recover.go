package rotate

import (
	"context"
	"fmt"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/state"
)

// Recovery is what Recover did with an unfinished rotation.
type Recovery struct {
	// Container is the one that serves the replica afterwards ("" when
	// neither the old nor the new one was left).
	Container string
	// Completed is true when the swap was finished, false when it was
	// undone.
	Completed bool
	// Note says what was done, for the journal and the status.
	Note string
}

// Recover finishes or undoes a replacement that an agent left unfinished,
// from its journal entry and what the engine shows: past the commit point
// (and the new container still there) it finishes the swap, else it removes
// the new container and brings the old one back. Either way exactly one
// container serves the replica afterwards, under its compose name, and the
// service's proxy points at it. Running it twice does no harm.
func (r *Replacer) Recover(ctx context.Context, rec state.Rotation) (Recovery, error) {
	old, oldFound, err := r.inspect(ctx, rec.OldContainer)
	if err != nil {
		return Recovery{}, err
	}
	newC, newFound, err := r.inspect(ctx, first(rec.NewContainer, rec.TempName))
	if err != nil {
		return Recovery{}, err
	}
	if rec.Name == "" && oldFound {
		rec.Name = CanonicalName(old.Name)
	}
	if rec.Proxy != "" {
		if _, found, _ := r.inspect(ctx, rec.Proxy); !found {
			rec.Proxy = ""
		}
	}
	s := &swap{r: r, job: Job{Journal: rec.ID, Old: rec.OldContainer, Strategy: Strategy(rec.Strategy)}, rec: rec, old: old,
		oldStops: true}
	if !oldFound {
		s.old.ID = ""
		s.old.Config = &container.Config{Labels: map[string]string{}}
		if newFound {
			s.old.Config.Labels = newC.Config.Labels
		}
	}
	if committed(rec.Step) && newFound {
		s.newID = newC.ID
		s.oldStops = !oldFound || old.State == nil || !old.State.Running
		if err := r.ensureRunning(ctx, newC); err != nil {
			return Recovery{}, err
		}
		if rec.Proxy != "" {
			if s.newIP, err = r.ipFor(ctx, s.newID, rec.Proxy); err != nil {
				return Recovery{}, err
			}
		}
		if _, err := s.finish(ctx); err != nil {
			return Recovery{}, err
		}
		return Recovery{Container: s.newID, Completed: true, Note: fmt.Sprintf("recovered at step %s: finished the swap", rec.Step)}, nil
	}
	if newFound {
		s.newID = newC.ID
	}
	if !oldFound {
		// Nothing to bring back: the new container, if any, serves.
		if !newFound {
			return Recovery{Note: fmt.Sprintf("recovered at step %s: neither container is left; run docker dso up", rec.Step)}, nil
		}
		if err := r.ensureRunning(ctx, newC); err != nil {
			return Recovery{}, err
		}
		if err := r.rename(ctx, s.newID, rec.Name); err != nil {
			return Recovery{}, err
		}
		return Recovery{Container: s.newID, Completed: true, Note: fmt.Sprintf("recovered at step %s: the old container was gone; the new one serves", rec.Step)}, nil
	}
	if err := s.rollback(ctx); err != nil {
		return Recovery{}, err
	}
	if err := r.rename(ctx, old.ID, rec.Name); err != nil {
		return Recovery{}, err
	}
	return Recovery{Container: old.ID, Note: fmt.Sprintf("recovered at step %s: undone, the old container serves", rec.Step)}, nil
}

// ensureRunning starts c when it is not running and hands it its secrets.
func (r *Replacer) ensureRunning(ctx context.Context, c container.InspectResponse) error {
	if c.State != nil && c.State.Running {
		return nil
	}
	return r.startAgain(ctx, c.ID)
}

// inspect returns the container id or name; found is false when the
// engine has no such container.
func (r *Replacer) inspect(ctx context.Context, id string) (container.InspectResponse, bool, error) {
	if id == "" {
		return container.InspectResponse{}, false, nil
	}
	ins, err := r.Docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if notFound(err) {
		return container.InspectResponse{}, false, nil
	}
	if err != nil {
		return container.InspectResponse{}, false, err
	}
	return ins.Container, true, nil
}

// Sweep removes what no journal entry explains: a container under a
// temporary name whose replica runs under its compose name is removed; one
// whose replica has no container under its compose name takes that name.
// filter selects the containers of this agent; the temporary containers of
// the rotations inFlight reports (by journal ID) are theirs, and left
// alone: an agent that got the engine back sweeps while its own rotations
// go on.
func (r *Replacer) Sweep(ctx context.Context, filter client.Filters, inFlight func(journal uint64) bool) ([]string, error) {
	list, err := r.Docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filter})
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, c := range list.Items {
		for _, n := range c.Names {
			names[strings.TrimPrefix(n, "/")] = true
		}
	}
	var notes []string
	for _, c := range list.Items {
		if len(c.Names) == 0 {
			continue
		}
		name := strings.TrimPrefix(c.Names[0], "/")
		base := CanonicalName(name)
		if base == name {
			continue
		}
		// Checked after the listing: a rotation in flight then may have
		// renamed its container since, so the leftover goes by its name.
		if id, ok := JournalOf(name); ok && inFlight(id) {
			continue
		}
		if names[base] {
			if _, err := r.Docker.ContainerRemove(ctx, name, client.ContainerRemoveOptions{Force: true}); err != nil && !notFound(err) {
				return notes, fmt.Errorf("remove the leftover container %s: %w", name, err)
			}
			notes = append(notes, fmt.Sprintf("removed the leftover container %s", name))
			continue
		}
		if err := r.rename(ctx, c.ID, base); err != nil {
			return notes, err
		}
		names[base] = true
		if c.State != container.StateRunning {
			ins, err := r.Docker.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
			if err != nil {
				return notes, err
			}
			if err := r.ensureRunning(ctx, ins.Container); err != nil {
				return notes, err
			}
		}
		notes = append(notes, fmt.Sprintf("gave %s back its compose name %s", name, base))
	}
	return notes, nil
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
