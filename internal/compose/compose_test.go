package compose

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	goyaml "gopkg.in/yaml.v3"

	"github.com/dso-project/dso/internal/secretref"
)

func load(t *testing.T, yaml string) *types.Project {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(context.Background(), ProjectOptions{Files: []string{filepath.Join(dir, "compose.yaml")}, Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var dsoYAML = Secrets{
	Lookup: func(name string) (LabelSecret, bool) {
		if name == "db" {
			return LabelSecret{Provider: "aws", Mappings: map[string]string{"MYSQL_PASSWORD": "prod/mysql/app"}}, true
		}
		if name == "tls" {
			return LabelSecret{File: true, Mappings: map[string]string{"TLS_KEY": "certs/key"}}, true
		}
		return LabelSecret{}, false
	},
	Targeting: func(service, container string) []string {
		if service == "web" {
			return []string{"tls"}
		}
		return nil
	},
}

func TestFindUses(t *testing.T) {
	p := load(t, `
services:
  web:
    image: x
    labels: {dso.secrets: "db"}
    environment:
      A: dso://a_secret
      B: dsofile://other/b#field
      C: not-a-ref
      D: ${UNSET_VAR:-dso://from/default}
`)
	uses, err := FindUses(p, p.ServiceNames(), dsoYAML)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range uses {
		got = append(got, u.Var+"="+u.Ref.String()+" ("+u.Origin+")")
	}
	want := []string{
		"A=dso://shop/a_secret (environment)",
		"B=dsofile://other/b#field (environment)",
		"D=dso://from/default (environment)",
		`MYSQL_PASSWORD=dso://prod/mysql/app?provider=aws (label dso.secrets "db")`,
		`TLS_KEY=dsofile://certs/key (dso.yaml secret "tls", targets.containers)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("uses:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestFindUsesReportsEveryProblem(t *testing.T) {
	p := load(t, `
services:
  a:
    image: x
    environment: {X: "dso://a//b", Y: "dsofile:///abs"}
  b:
    image: x
    labels: {dso.secrets: "nope"}
`)
	_, err := FindUses(p, p.ServiceNames(), dsoYAML)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`service "a", variable X`, `service "a", variable Y`, `service "b", label dso.secrets "nope": secret "nope" is not defined in dso.yaml`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

type fakeImages struct{ img Image }

func (f fakeImages) Config(context.Context, types.ServiceConfig) (Image, error) { return f.img, nil }
func (f fakeImages) IDs(_ context.Context, _ types.ServiceConfig, user string) (int, int, error) {
	return 70, 71, nil
}

func TestPlanKeepsEntrypointAndCommand(t *testing.T) {
	img := fakeImages{Image{Entrypoint: []string{"/entry"}, Cmd: []string{"serve", "--port=80"}, User: "app"}}
	tests := []struct {
		yaml        string
		ep, cmd     []string
		uid, gid    int
		description string
	}{
		{"image: x", []string{"/entry"}, []string{"serve", "--port=80"}, 70, 71, "the image's entrypoint, command and named user"},
		{"image: x\n    command: [\"other\"]\n    user: \"1000:1000\"", []string{"/entry"}, []string{"other"}, 1000, 1000, "the service's command, the image's entrypoint"},
		{"image: x\n    entrypoint: [\"/bin/sh\", \"-c\", \"echo $$HOME\"]", []string{"/bin/sh", "-c", "echo $HOME"}, nil, 70, 71, "an entrypoint set in the service clears the image's command"},
	}
	for _, tt := range tests {
		p := load(t, "services:\n  s:\n    "+tt.yaml+"\n    environment: {A: dso://x/y}\n")
		uses, err := FindUses(p, p.ServiceNames(), Secrets{})
		if err != nil {
			t.Fatal(err)
		}
		plan, err := NewPlan(context.Background(), p, uses, Wiring{InitBinary: "/opt/dso/dso-init", Agent: "local-1"}, img)
		if err != nil {
			t.Fatal(err)
		}
		sp := plan.Services[0]
		if strings.Join(sp.Entrypoint, " ") != strings.Join(tt.ep, " ") || strings.Join(sp.Command, " ") != strings.Join(tt.cmd, " ") || sp.UID != tt.uid || sp.GID != tt.gid {
			t.Errorf("%s: got %q %q %d:%d", tt.description, sp.Entrypoint, sp.Command, sp.UID, sp.GID)
		}
	}
}

func TestOverrideIsSecretFreeAndEscaped(t *testing.T) {
	p := load(t, "services:\n  s:\n    image: x\n    entrypoint: [\"/bin/sh\", \"-c\", \"echo $$HOME\"]\n    environment: {A: dso://x/y}\n")
	uses, _ := FindUses(p, p.ServiceNames(), Secrets{})
	plan, err := NewPlan(context.Background(), p, uses, Wiring{InitBinary: "/opt/dso/dso-init", Agent: "system"}, fakeImages{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := plan.Override()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Entrypoint []string
			Volumes    []map[string]any
			Tmpfs      []string
			Labels     map[string]string
		}
	}
	if err := goyaml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Services["s"]
	if got := strings.Join(s.Entrypoint, " "); got != "/.dso/init -- /bin/sh -c echo $$HOME" {
		t.Errorf("entrypoint %q: the init in front, $ escaped for compose", got)
	}
	if s.Tmpfs[0] != "/run/dso:uid=0,gid=0,mode=0700,size=64m" {
		t.Errorf("tmpfs %q", s.Tmpfs[0])
	}
	if s.Volumes[0]["source"] != "/opt/dso/dso-init" || s.Volumes[0]["read_only"] != true {
		t.Errorf("init mount %v", s.Volumes[0])
	}
	if s.Labels[LabelRefs] != `{"A":"dso://x/y"}` || s.Labels[LabelAgent] != "system" || s.Labels["dso.config"] != "" {
		t.Errorf("labels %v", s.Labels)
	}
	refs, err := RefsFromLabels(s.Labels)
	if err != nil || refs["A"].Path != "x/y" {
		t.Errorf("labels do not read back: %v %v", refs, err)
	}
}

func FuzzRefsFromLabels(f *testing.F) {
	f.Add(`{"A":"dso://x/y","B":"dsofile://p/q#k"}`)
	f.Add(`{"A":"nope"}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, label string) {
		refs, err := RefsFromLabels(map[string]string{LabelRefs: label})
		if err != nil {
			return
		}
		for v, r := range refs {
			b, _ := json.Marshal(map[string]string{v: r.String()})
			back, err := RefsFromLabels(map[string]string{LabelRefs: string(b)})
			if err != nil || back[v] != r {
				t.Fatalf("%s=%s does not read back: %v", v, r, err)
			}
		}
	})
}

func TestPlanFilePerms(t *testing.T) {
	tests := []struct {
		user, ref string
		tmpfs     string // mode of the tmpfs, "" when up must refuse
	}{
		{"0:0", "dsofile://x/y?uid=0&gid=70&mode=0440", "0711"}, // root may give files away
		{"", "dsofile://x/y?gid=70", "0711"},
		{"1000:1000", "dsofile://x/y?mode=0440", "0711"},
		{"1000:1000", "dsofile://x/y?uid=1000&gid=1000", "0711"},
		{"1000:1000", "dsofile://x/y", "0700"},
		{"1000:1000", "dso://x/y", "0700"},
		{"1000:1000", "dsofile://x/y?uid=0", ""},
		{"1000:1000", "dsofile://x/y?gid=70", ""},
	}
	for _, tt := range tests {
		yaml := "services:\n  s:\n    image: x\n    environment: {A: \"" + tt.ref + "\"}\n"
		if tt.user != "" {
			yaml += "    user: \"" + tt.user + "\"\n"
		}
		p := load(t, yaml)
		uses, err := FindUses(p, p.ServiceNames(), Secrets{})
		if err != nil {
			t.Fatal(err)
		}
		plan, err := NewPlan(context.Background(), p, uses, Wiring{InitBinary: "/opt/dso/dso-init", Agent: "a"}, fakeImages{Image{Entrypoint: []string{"/e"}}})
		if tt.tmpfs == "" {
			if err == nil || !strings.Contains(err.Error(), "needs the service to run as root") || !strings.Contains(err.Error(), `service "s", variable A`) {
				t.Errorf("user %q, %s: error %v, want a refusal naming the service and variable", tt.user, tt.ref, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("user %q, %s: %v", tt.user, tt.ref, err)
			continue
		}
		out, err := plan.Override()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "mode="+tt.tmpfs+",") {
			t.Errorf("user %q, %s: tmpfs not mode %s:\n%s", tt.user, tt.ref, tt.tmpfs, out)
		}
		var doc struct {
			Services map[string]struct{ Labels map[string]string }
		}
		if err := goyaml.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		refs, err := RefsFromLabels(doc.Services["s"].Labels)
		if err != nil || refs["A"] != secretref.MustParse(tt.ref) {
			t.Errorf("user %q: the dso.refs label carries %v (%v), want %s", tt.user, refs, err, tt.ref)
		}
	}
}

func TestLabelFormCarriesPerm(t *testing.T) {
	p := load(t, "services:\n  s:\n    image: x\n    labels: {dso.secrets: tls}\n")
	perm := secretref.Perm{GID: 101, Mode: 0o440, HasGID: true, HasMode: true}
	uses, err := FindUses(p, p.ServiceNames(), Secrets{Lookup: func(string) (LabelSecret, bool) {
		return LabelSecret{File: true, Perm: perm, Mappings: map[string]string{"KEY": "certs/key"}}, true
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(uses) != 1 || uses[0].Ref.Perm != perm || uses[0].Ref.String() != "dsofile://certs/key?gid=101&mode=0440" {
		t.Errorf("uses %+v", uses)
	}
}
