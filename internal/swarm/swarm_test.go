package swarm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"gopkg.in/yaml.v3"

	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/config"
	"github.com/dso-project/dso/internal/secretref"
	"github.com/dso-project/dso/internal/swarm/driver"
)

func TestNewSecretNamesCarryTheVersion(t *testing.T) {
	ref := secretref.MustParse("dsofile://app/db_password?uid=70&mode=0440")
	a, b := NewSecret("app", ref, "1"), NewSecret("app", ref, "2")
	if a.Name == b.Name {
		t.Fatalf("two versions share the name %s", a.Name)
	}
	if a != NewSecret("app", secretref.MustParse("dso://app/db_password"), "1") {
		t.Errorf("dso:// and dsofile:// of one secret at one version make two objects")
	}
	if !strings.HasPrefix(a.Name, "app_dso_db_password_") {
		t.Errorf("name %s does not say the stack and the secret", a.Name)
	}
	long := NewSecret(strings.Repeat("s", 40), secretref.MustParse("dso://app/"+strings.Repeat("x", 80)+"#"+strings.Repeat("k", 30)), "v")
	if len(long.Name) > 64 {
		t.Errorf("name %s is %d characters; Swarm allows 64", long.Name, len(long.Name))
	}
	got, ok := FromSpec(a.Spec())
	if !ok || got != a {
		t.Errorf("FromSpec(Spec()) = %+v, %v; want %+v", got, ok, a)
	}
	if _, ok := FromSpec(swarm.SecretSpec{Annotations: swarm.Annotations{Name: "x", Labels: a.Spec().Labels}}); ok {
		t.Errorf("a secret without the dso driver was taken as DSO's")
	}
}

func TestOverrideMountsEachVariable(t *testing.T) {
	env := secretref.MustParse("dso://app/api_key")
	file := secretref.MustParse("dsofile://app/tls?mode=0440#key")
	sp := compose.ServicePlan{Name: "web", Entrypoint: []string{"/app", "$HOME"}, Command: []string{"serve"}, UID: 1000, GID: 1000,
		Uses: []compose.Use{{Service: "web", Var: "API_KEY", Ref: env}, {Service: "web", Var: "TLS_KEY", Ref: file}}}
	pl, err := NewPlan("app", []compose.ServicePlan{sp}, map[secretref.Ref]string{env: "3", file: "7"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := pl.Override()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Entrypoint []string
			Command    []string
			Volumes    []map[string]any
			Secrets    []struct {
				Source, Target, UID, GID string
				Mode                     uint32
			}
			Deploy struct{ Labels map[string]string }
		}
		Secrets map[string]struct {
			External bool
			Name     string
		}
	}
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("override is not YAML: %v\n%s", err, out)
	}
	web := doc.Services["web"]
	if want := []string{"/.dso/init", "swarm", "--", "/app", "$$HOME"}; fmt.Sprint(web.Entrypoint) != fmt.Sprint(want) {
		t.Errorf("entrypoint %q, want %q", web.Entrypoint, want)
	}
	if len(web.Volumes) != 1 || web.Volumes[0]["source"] != InitHostPath || web.Volumes[0]["read_only"] != true {
		t.Errorf("volumes %v: dso-init not bind-mounted read-only from %s", web.Volumes, InitHostPath)
	}
	if len(web.Secrets) != 2 {
		t.Fatalf("secrets %+v, want 2", web.Secrets)
	}
	for _, s := range web.Secrets {
		want := map[string]uint32{"dso.API_KEY": 0o400, "dso.TLS_KEY": 0o440}[s.Target]
		if s.Mode != want || s.UID != "1000" || s.GID != "1000" || !doc.Secrets[s.Source].External || doc.Secrets[s.Source].Name != s.Source {
			t.Errorf("secret use %+v (declared %+v): want target mode %o owned by 1000:1000, external", s, doc.Secrets[s.Source], want)
		}
	}
	if web.Deploy.Labels[driver.LabelStack] != "app" {
		t.Errorf("deploy labels %v", web.Deploy.Labels)
	}
}

// fakeSwarm is an in-memory engine: secrets and services, and updates
// that Swarm completes at once (or rolls back when rollback is set).
type fakeSwarm struct {
	mu       sync.Mutex
	secrets  map[string]swarm.Secret // by ID
	services map[string]*swarm.Service
	rollback bool
	updates  int
	n        int
}

func newFake() *fakeSwarm {
	return &fakeSwarm{secrets: map[string]swarm.Secret{}, services: map[string]*swarm.Service{}}
}

func (f *fakeSwarm) SecretList(_ context.Context, o client.SecretListOptions) (client.SecretListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out client.SecretListResult
	for _, s := range f.secrets {
		if names := o.Filters["name"]; len(names) > 0 && !names[s.Spec.Name] {
			continue
		}
		out.Items = append(out.Items, s)
	}
	return out, nil
}

func (f *fakeSwarm) SecretCreate(_ context.Context, o client.SecretCreateOptions) (client.SecretCreateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	id := fmt.Sprintf("sec%d", f.n)
	f.secrets[id] = swarm.Secret{ID: id, Meta: swarm.Meta{CreatedAt: time.Unix(int64(f.n), 0)}, Spec: o.Spec}
	return client.SecretCreateResult{ID: id}, nil
}

func (f *fakeSwarm) SecretRemove(_ context.Context, id string, _ client.SecretRemoveOptions) (client.SecretRemoveResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, svc := range f.services {
		for _, r := range svc.Spec.TaskTemplate.ContainerSpec.Secrets {
			if r.SecretID == id {
				return client.SecretRemoveResult{}, errors.New("in use")
			}
		}
	}
	delete(f.secrets, id)
	return client.SecretRemoveResult{}, nil
}

func (f *fakeSwarm) ServiceList(context.Context, client.ServiceListOptions) (client.ServiceListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out client.ServiceListResult
	for _, s := range f.services {
		out.Items = append(out.Items, *s)
	}
	return out, nil
}

func (f *fakeSwarm) ServiceInspect(_ context.Context, id string, _ client.ServiceInspectOptions) (client.ServiceInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return client.ServiceInspectResult{Service: *f.services[id]}, nil
}

func (f *fakeSwarm) ServiceUpdate(_ context.Context, id string, o client.ServiceUpdateOptions) (client.ServiceUpdateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	svc := f.services[id]
	if o.Version != svc.Version {
		return client.ServiceUpdateResult{}, errors.New("update out of sequence")
	}
	f.updates++
	svc.Version.Index++
	if f.rollback {
		svc.UpdateStatus = &swarm.UpdateStatus{State: swarm.UpdateStateRollbackCompleted, Message: "task failed"}
		return client.ServiceUpdateResult{}, nil
	}
	svc.PreviousSpec, svc.Spec = &svc.Spec, o.Spec
	svc.UpdateStatus = &swarm.UpdateStatus{State: swarm.UpdateStateCompleted}
	return client.ServiceUpdateResult{}, nil
}

func (f *fakeSwarm) TaskList(context.Context, client.TaskListOptions) (client.TaskListResult, error) {
	return client.TaskListResult{}, nil
}

// deploy adds a service of stack app mounting ref at version for API_KEY.
func (f *fakeSwarm) deploy(t *testing.T, ref secretref.Ref, version string, labels map[string]string, ports ...swarm.PortConfig) Secret {
	t.Helper()
	s := NewSecret("app", ref, version)
	id, err := Ensure(context.Background(), f, s)
	if err != nil {
		t.Fatal(err)
	}
	m := Mount{Var: "API_KEY", Secret: s, UID: "1000", GID: "1000", Mode: 0o400}
	f.services["svc1"] = &swarm.Service{ID: "svc1", Spec: swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: "app_web", Labels: map[string]string{driver.LabelStack: "app"}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Labels: labels, Secrets: []*swarm.SecretReference{m.Reference(id)}}},
		EndpointSpec: &swarm.EndpointSpec{Ports: ports},
	}}
	return s
}

func (f *fakeSwarm) mounted() *swarm.SecretReference {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.services["svc1"].Spec.TaskTemplate.ContainerSpec.Secrets[0]
}

func rotator(f *fakeSwarm, version *string, strategy config.Strategy, done *[]Rotation) *Rotator {
	return &Rotator{
		Docker:   f,
		Version:  func(context.Context, secretref.Ref) (string, error) { return *version, nil },
		Strategy: func(map[string]string) (config.Strategy, error) { return strategy, nil },
		Done:     func(r Rotation) { *done = append(*done, r) },
	}
}

func TestPassSwapsInTheNewVersion(t *testing.T) {
	ctx := context.Background()
	ref := secretref.MustParse("dso://app/api_key")
	for _, tc := range []struct {
		name  string
		strat config.Strategy
		ports []swarm.PortConfig
		order swarm.UpdateOrder
	}{
		{"rolling", config.StrategyRolling, nil, swarm.UpdateOrderStartFirst},
		{"rolling with a host-mode port", config.StrategyRolling, []swarm.PortConfig{{TargetPort: 80, PublishedPort: 8080, PublishMode: swarm.PortConfigPublishModeHost}}, swarm.UpdateOrderStopFirst},
		{"restart", config.StrategyRestart, nil, swarm.UpdateOrderStopFirst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			old := f.deploy(t, ref, "1", nil, tc.ports...)
			version, done := "1", []Rotation{}
			r := rotator(f, &version, tc.strat, &done)
			if err := r.Pass(ctx); err != nil || f.updates != 0 {
				t.Fatalf("a pass with nothing changed: err %v, %d updates", err, f.updates)
			}
			version = "2"
			if err := r.Pass(ctx); err != nil {
				t.Fatal(err)
			}
			got := f.mounted()
			want := NewSecret("app", ref, "2")
			if got.SecretName != want.Name || f.secrets[got.SecretID].Spec.Name != want.Name {
				t.Errorf("service mounts %s (%s), want %s", got.SecretName, got.SecretID, want.Name)
			}
			if *got.File != (swarm.SecretReferenceFileTarget{Name: "dso.API_KEY", UID: "1000", GID: "1000", Mode: 0o400}) {
				t.Errorf("file target changed: %+v", *got.File)
			}
			if o := f.services["svc1"].Spec.UpdateConfig; o == nil || o.Order != tc.order || o.FailureAction != swarm.UpdateFailureActionRollback {
				t.Errorf("update config %+v, want order %s with rollback", o, tc.order)
			}
			for _, s := range f.secrets {
				if s.Spec.Name == old.Name {
					t.Errorf("the old secret %s is still there", old.Name)
				}
			}
			if len(done) != 1 || done[0].Err != nil || done[0].Service != "app_web" {
				t.Errorf("reported %+v", done)
			}
			if err := r.Pass(ctx); err != nil || f.updates != 1 {
				t.Errorf("a second pass: err %v, %d updates in all (want 1)", err, f.updates)
			}
		})
	}
}

func TestPassRefusesAndBacksOff(t *testing.T) {
	ctx := context.Background()
	ref := secretref.MustParse("dso://app/api_key")

	f := newFake()
	old := f.deploy(t, ref, "1", nil)
	version, done := "2", []Rotation{}
	if err := rotator(f, &version, config.StrategySignal, &done).Pass(ctx); err == nil || !strings.Contains(err.Error(), "signal") {
		t.Errorf("signal strategy: err %v, want a refusal naming signal", err)
	}
	if f.updates != 0 || f.mounted().SecretName != old.Name {
		t.Errorf("signal strategy changed the service")
	}

	f = newFake()
	old = f.deploy(t, ref, "1", nil)
	f.rollback = true
	done = nil
	r := rotator(f, &version, config.StrategyRolling, &done)
	if err := r.Pass(ctx); err == nil || !strings.Contains(err.Error(), "rollback_completed") {
		t.Errorf("rolled back update: err %v", err)
	}
	if len(done) != 1 || done[0].Err == nil {
		t.Errorf("failure not reported: %+v", done)
	}
	if err := r.Pass(ctx); err != nil || f.updates != 1 {
		t.Errorf("retried at once after a failure: err %v, %d updates", err, f.updates)
	}
}
