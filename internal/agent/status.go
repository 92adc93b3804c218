package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/buildinfo"
)

// Health is the agent's own health for the APIs.
func (a *Agent) Health(ctx context.Context) api.AgentStatus {
	st := api.AgentStatus{Health: api.HealthOK, Version: buildinfo.Version, PID: os.Getpid(), StartedAt: a.started}
	if a.started.IsZero() {
		st.Health = api.HealthStarting
	}
	a.mu.Lock()
	if len(a.failing) > 0 {
		st.Health = api.HealthDegraded
		st.Problems = append(st.Problems, a.failing.problems()...)
	}
	var late []string
	for id, w := range a.waiting {
		late = append(late, fmt.Sprintf("container %s (%s) is waiting for its secrets: %s", w.name, shortID(id), w.reason))
	}
	if a.fromCacheCount > 0 {
		for id, h := range a.held {
			if len(h.fromCache) > 0 {
				late = append(late, fmt.Sprintf("container %s (%s) got %s from the cache: provider failing", strings.TrimPrefix(h.name, "/"), shortID(id), strings.Join(h.cachedNames(), ", ")))
			}
		}
	}
	a.mu.Unlock()
	if len(late) > 0 {
		sort.Strings(late)
		st.Health = api.HealthDegraded
		st.Problems = append(st.Problems, late...)
	}
	if a.cache != nil {
		if err := a.cache.Unlocked(); err != nil {
			st.Health = api.HealthDegraded
			st.Problems = append(st.Problems, "cache not locked against swap: "+err.Error())
		}
	}
	if snap, err := a.watcher.Snapshot(ctx); err == nil {
		for _, k := range snap {
			if k.Failing {
				st.Health = api.HealthDegraded
				st.Problems = append(st.Problems, fmt.Sprintf("cannot check %s", keyName(k.Key)))
			}
		}
	}
	return st
}

// Status is what `docker dso status` shows: health, watched secrets with
// their versions, managed containers with what they hold, recent rotations.
// It holds names and versions, never a value.
func (a *Agent) Status(ctx context.Context) (api.Status, error) {
	s := api.Status{Agent: a.Health(ctx)}
	if err := a.hostPorts(ctx); err != nil {
		s.HostPortsNote = err.Error()
	} else {
		s.BindsHostPorts = true
	}
	snap, err := a.watcher.Snapshot(ctx)
	if err != nil {
		return s, err
	}
	for _, k := range snap {
		_, prov, _, _ := splitKey(k.Key)
		s.Secrets = append(s.Secrets, api.SecretStatus{Name: keyName(k.Key), Provider: prov, Version: k.Version,
			LastCheck: k.LastCheck, NextCheck: k.NextCheck, Interval: k.Interval, Failing: k.Failing})
	}
	a.mu.Lock()
	for id, h := range a.held {
		cs := api.ContainerStatus{ID: shortID(id), Name: strings.TrimPrefix(h.name, "/"), Project: h.project, Service: h.service, Secrets: map[string]string{}}
		for _, sec := range h.secrets {
			cs.Secrets[keyName(sec.key)] = sec.version
		}
		for k, at := range h.fromCache {
			if cs.FromCache == nil {
				cs.FromCache = map[string]time.Time{}
			}
			cs.FromCache[keyName(k)] = at
		}
		s.Containers = append(s.Containers, cs)
	}
	a.mu.Unlock()
	sort.Slice(s.Containers, func(i, j int) bool { return s.Containers[i].Name < s.Containers[j].Name })
	s.Waiting = a.waitingStatus()
	if s.Swarm, err = a.swarmStatus(ctx); err != nil {
		s.Agent.Problems = append(s.Agent.Problems, "swarm status: "+err.Error())
	}
	if a.opts.Store != nil {
		rs, err := a.opts.Store.Rotations(20)
		if err == nil {
			for _, r := range rs {
				r.OldContainer, r.NewContainer = shortID(r.OldContainer), shortID(r.NewContainer)
				s.Rotations = append(s.Rotations, r)
			}
		}
	}
	return s, nil
}

// Trigger checks the named secrets (provider:path) now, or all of them.
func (a *Agent) Trigger(names []string) error {
	if len(names) == 0 {
		a.watcher.Trigger()
		return nil
	}
	a.mu.Lock()
	byName := map[string][]string{}
	for _, h := range a.held {
		for _, sec := range h.secrets {
			k := sec.key
			byName[keyName(k)] = append(byName[keyName(k)], k)
			_, _, path, _ := splitKey(k)
			byName[path] = append(byName[path], k)
		}
	}
	a.mu.Unlock()
	var keys []string
	for _, n := range names {
		ks, ok := byName[n]
		if !ok {
			return fmt.Errorf("no watched secret %q", n)
		}
		keys = append(keys, ks...)
	}
	a.watcher.Trigger(keys...)
	return nil
}

// hostPorts asks Options.HostPorts, for at most hostPortsWait: an engine
// that does not answer makes it no, not a status that hangs.
func (a *Agent) hostPorts(ctx context.Context) error {
	if a.opts.HostPorts == nil {
		return errors.New("this agent does not bind host ports")
	}
	ctx, cancel := context.WithTimeout(ctx, hostPortsWait)
	defer cancel()
	return a.opts.HostPorts(ctx)
}

const hostPortsWait = 2 * time.Second
