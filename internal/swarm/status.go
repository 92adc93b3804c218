package swarm

import (
	"context"
	"fmt"
	"sort"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/swarm/driver"
)

// Status reports each service that mounts a DSO secret: its stack, the
// state of its rolling update (a rotation in progress shows as updating),
// and for each running or starting task its node and the secret versions
// it holds.
func Status(ctx context.Context, docker Docker) ([]api.SwarmService, error) {
	secrets, err := (&Rotator{Docker: docker}).secrets(ctx)
	if err != nil {
		return nil, err
	}
	services, err := docker.ServiceList(ctx, client.ServiceListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing services: %w", err)
	}
	var out []api.SwarmService
	for _, svc := range services.Items {
		s := api.SwarmService{Stack: svc.Spec.Labels[driver.LabelStack], Name: svc.Spec.Name}
		if s.Stack == "" {
			continue
		}
		if u := svc.UpdateStatus; u != nil {
			s.Update, s.UpdateMessage = string(u.State), u.Message
		}
		tasks, err := docker.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", svc.ID)})
		if err != nil {
			return nil, fmt.Errorf("listing the tasks of %s: %w", svc.Spec.Name, err)
		}
		for _, t := range tasks.Items {
			if t.DesiredState != swarm.TaskStateRunning && t.Status.State != swarm.TaskStateRunning {
				continue
			}
			ts := api.SwarmTask{ID: t.ID, Slot: t.Slot, Node: t.NodeID, State: string(t.Status.State), Secrets: map[string]string{}}
			if cs := t.Spec.ContainerSpec; cs != nil {
				for _, ref := range cs.Secrets {
					if sec, ok := secrets[ref.SecretName]; ok {
						ts.Secrets[sec.Ref.String()] = sec.Version
					}
				}
			}
			s.Tasks = append(s.Tasks, ts)
		}
		sort.Slice(s.Tasks, func(i, j int) bool { return s.Tasks[i].Slot < s.Tasks[j].Slot })
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
