package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/state"
)

// projects holds what callers registered over the agent's socket: which
// dso.yaml the containers of each compose project use. It replaces the
// dso.config label, which whoever creates a container can write: the agent
// reads no file a label names.
//
// A caller may name a dso.yaml only when the agent reading it gives the
// caller nothing it does not have: the caller is the agent's own user or
// root (who can read the file themselves, and whose environment the agent's
// ${VAR} expansion draws from anyway), or the file is the agent's own
// configuration. Anyone else's project uses the agent's own configuration;
// on a shared host, the providers belong in /etc/dso/dso.yaml. A project
// registered by one user cannot be taken over by another (root excepted).
type projects struct {
	store *state.Store // nil: kept in memory only
	own   string       // the agent's own dso.yaml ("" when none)
	uid   uint32       // the agent's user

	mu sync.Mutex
	m  map[string]state.Project
}

func newProjects(store *state.Store, own string, uid uint32) (*projects, error) {
	if own != "" {
		abs, err := filepath.Abs(own)
		if err != nil {
			return nil, err
		}
		own = abs
	}
	p := &projects{store: store, own: own, uid: uid, m: map[string]state.Project{}}
	if store == nil {
		return p, nil
	}
	list, err := store.Projects()
	if err != nil {
		return nil, fmt.Errorf("reading the registered projects: %w", err)
	}
	for _, r := range list {
		p.m[r.Name] = r
	}
	return p, nil
}

// projectName is compose's rule for project names.
var projectName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// register records r from peer, or says why not.
func (p *projects) register(peer api.Peer, r api.Registration) error {
	if !projectName.MatchString(r.Project) || len(r.Project) > 255 {
		return fmt.Errorf("project name %.64q: want lower-case letters, digits, '-' and '_', starting with a letter or digit", r.Project)
	}
	trusted := peer.UID == 0 || peer.UID == p.uid
	if r.Config != "" {
		if !filepath.IsAbs(r.Config) || filepath.Clean(r.Config) != r.Config {
			return fmt.Errorf("project %s: the dso.yaml path must be absolute and clean", r.Project)
		}
		if !trusted && r.Config != p.own {
			return fmt.Errorf("%w: project %s: the agent reads a dso.yaml named by its own user or root only; uid %d's projects use the agent's configuration (%s): put the providers there, or run the agent as that user", api.ErrRegistrationRefused, r.Project, peer.UID, describe(p.own))
		}
		if st, err := os.Stat(r.Config); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("project %s: %s is not a readable file", r.Project, r.Config)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if prev, ok := p.m[r.Project]; ok && prev.UID != peer.UID && peer.UID != 0 {
		return fmt.Errorf("%w: project %s is registered by uid %d", api.ErrRegistrationRefused, r.Project, prev.UID)
	}
	rec := state.Project{Name: r.Project, Config: r.Config, UID: peer.UID, RegisteredAt: time.Now().UTC()}
	if p.store != nil {
		if err := p.store.PutProject(rec); err != nil {
			return err
		}
	}
	p.m[r.Project] = rec
	return nil
}

// config is the dso.yaml registered for project ("" for the agent's own).
func (p *projects) config(project string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[project].Config
}

func describe(path string) string {
	if path == "" {
		return "none: the local vault"
	}
	return path
}

// Register handles a registration from the agent's socket.
func (a *Agent) Register(ctx context.Context, peer api.Peer, r api.Registration) error {
	err := a.projects.register(peer, r)
	if err == nil {
		err = a.registerContainers(ctx, peer, r)
	}
	if err == nil {
		err = a.bindProject(ctx, r.Project)
	}
	if err != nil {
		a.emit(eventRegistration(r.Project, peer.UID, err))
		return err
	}
	cfg := r.Config
	if cfg == "" {
		cfg = "the agent's own"
	}
	a.opts.Log.Info("project registered", "project", r.Project, "uid", peer.UID, "config", cfg, "containers", len(r.Containers))
	a.emit(eventRegistration(r.Project, peer.UID, nil))
	return nil
}

func eventRegistration(project string, uid uint32, err error) events.Event {
	e := events.Event{Type: events.TypeRegistration, Project: project, Result: "registered", Attrs: map[string]string{"uid": fmt.Sprint(uid)}}
	if err != nil {
		e.Level, e.Result, e.Message = "WARN", "refused", err.Error()
	}
	return e
}
