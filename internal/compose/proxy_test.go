package compose

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"

	"github.com/dso-project/dso/internal/config"
)

func rollingPlan(t *testing.T, services string, img Image) (*Plan, error) {
	t.Helper()
	return strategyPlan(t, config.StrategyRolling, services, img)
}

func strategyPlan(t *testing.T, st config.Strategy, services string, img Image) (*Plan, error) {
	t.Helper()
	return wiredPlan(t, Wiring{Strategy: func(types.ServiceConfig) config.Strategy { return st }}, services, img)
}

// decodeOverride decodes the override of plan (err is NewPlan's) into doc
// and returns it.
func decodeOverride(t *testing.T, plan *Plan, err error, doc any) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	out, err := plan.Override()
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(out, doc); err != nil {
		t.Fatal(err)
	}
	return out
}

// wiredPlan plans services with w, for the agent local-1.
func wiredPlan(t *testing.T, w Wiring, services string, img Image) (*Plan, error) {
	t.Helper()
	p := load(t, "services:\n"+services)
	uses, err := FindUses(p, p.ServiceNames(), Secrets{})
	if err != nil {
		t.Fatal(err)
	}
	w.InitBinary, w.Agent = "/opt/dso/dso-init", "local-1"
	return NewPlan(context.Background(), p, uses, w, fakeImages{img})
}

// TestProxyOwnsEveryPortForm: every form of compose ports and the seed's
// dso.host_ports move to the proxy, bind addresses kept; the service keeps
// none.
func TestProxyOwnsEveryPortForm(t *testing.T) {
	plan, err := rollingPlan(t, `  web:
    image: x
    environment: {A: dso://x/y}
    expose: ["3306"]
    ports: ["8080:80", "127.0.0.1:8443:443/tcp", "9000-9001:90-91"]
    labels: {dso.host_ports: "3306:3306"}
`, Image{Cmd: []string{"serve"}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := plan.Override()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "ports: !reset []") {
		t.Errorf("the service keeps its own ports:\n%s", out)
	}
	var doc struct {
		Services map[string]struct {
			Entrypoint []string
			Ports      []map[string]any
			Labels     map[string]string
			Networks   []string
		}
	}
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	px, ok := doc.Services["web-dso-proxy"]
	if !ok {
		t.Fatalf("no proxy service:\n%s", out)
	}
	var got []string
	for _, p := range px.Ports {
		ip, _ := p["host_ip"].(string)
		got = append(got, ip+"|"+p["published"].(string)+"|"+strings.TrimSpace(yamlScalar(p["target"])))
	}
	want := "|8080|80 127.0.0.1|8443|443 |9000|90 |9001|91 |3306|3306"
	if strings.Join(got, " ") != want {
		t.Errorf("proxy ports %q, want %q", strings.Join(got, " "), want)
	}
	if e := strings.Join(px.Entrypoint, " "); e != "/.dso/init proxy --backend web --port 80 --port 90 --port 91 --port 443 --port 3306" {
		t.Errorf("proxy entrypoint %q", e)
	}
	if px.Labels[LabelProxyFor] != "web" || px.Labels[LabelAgent] != "local-1" {
		t.Errorf("proxy labels %v", px.Labels)
	}
}

func yamlScalar(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

// TestRestartProxyWherePossible: a restart service's TCP host ports go
// behind the proxy too; ports the proxy cannot own stay with Docker, unless
// they come from dso.host_ports, which only the proxy serves; signal and
// none services keep theirs.
func TestRestartProxyWherePossible(t *testing.T) {
	for _, tt := range []struct {
		st       config.Strategy
		services string
		proxy    bool
		err      string
	}{
		{config.StrategyRestart, "  web:\n    image: x\n    environment: {A: dso://x/y}\n    ports: [\"8080:80\"]\n", true, ""},
		{config.StrategyRestart, "  dns:\n    image: x\n    environment: {A: dso://x/y}\n    ports: [\"8080:80\", \"5353:53/udp\"]\n", false, ""},
		{config.StrategyRestart, "  a:\n    image: x\n    environment: {A: dso://x/y}\n    network_mode: host\n    ports: [\"8080:80\"]\n", false, ""},
		{config.StrategyRestart, "  db:\n    image: x\n    environment: {A: dso://x/y}\n    network_mode: host\n    expose: [\"3306\"]\n    labels: {dso.host_ports: \"3306:3306\"}\n", false,
			`service "db": network_mode "host" leaves no compose network for DSO's proxy, and the label dso.host_ports needs it`},
		{config.StrategySignal, "  web:\n    image: x\n    environment: {A: dso://x/y}\n    ports: [\"8080:80\"]\n", false, ""},
		{config.StrategyNone, "  web:\n    image: x\n    environment: {A: dso://x/y}\n    ports: [\"8080:80\"]\n", false, ""},
	} {
		plan, err := strategyPlan(t, tt.st, tt.services, Image{Cmd: []string{"serve"}})
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s %q: got %v, want an error with %q", tt.st, tt.services, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s %q: %v", tt.st, tt.services, err)
		}
		if got := plan.Services[0].Proxy != nil; got != tt.proxy {
			t.Errorf("%s %q: proxy %v, want %v", tt.st, tt.services, got, tt.proxy)
		}
	}
}

func TestProxyRefusesBadPorts(t *testing.T) {
	for _, tt := range []struct{ services, want string }{
		{"  db:\n    image: x\n    environment: {A: dso://x/y}\n    labels: {dso.host_ports: \"3306\"}\n    expose: [\"3306\"]\n",
			`service "db", label dso.host_ports "3306": "3306": expected HOST:CONTAINER`},
		{"  db:\n    image: x\n    environment: {A: dso://x/y}\n    labels: {dso.host_ports: \"a:b\"}\n",
			`service "db", label dso.host_ports "a:b"`},
		{"  db:\n    image: x\n    environment: {A: dso://x/y}\n    labels: {dso.host_ports: \"3306:3306\"}\n",
			`service "db", label dso.host_ports "3306:3306": container port 3306 is not exposed`},
		{"  dns:\n    image: x\n    environment: {A: dso://x/y}\n    ports: [\"5353:53/udp\"]\n",
			`service "dns", port 5353:53/udp: DSO's proxy forwards TCP only`},
		{"  a:\n    image: x\n    environment: {A: dso://x/y}\n    ports: [\"8080:80\"]\n  b:\n    image: x\n    ports: [\"127.0.0.1:8080:81\"]\n",
			`host port 8080/tcp is claimed twice: by service "a" and by service "b"`},
		{"  a:\n    image: x\n    environment: {A: dso://x/y}\n    network_mode: host\n    ports: [\"8080:80\"]\n",
			`service "a": network_mode "host"`},
	} {
		_, err := rollingPlan(t, tt.services, Image{Cmd: []string{"serve"}})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("got %v\nwant an error with %q", err, tt.want)
		}
	}
}

func TestProxyPortExposedByImage(t *testing.T) {
	_, err := rollingPlan(t, "  db:\n    image: x\n    environment: {A: dso://x/y}\n    labels: {dso.host_ports: \"127.0.0.1:13306:3306\"}\n",
		Image{Cmd: []string{"serve"}, Exposed: []string{"3306/tcp"}})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRefusesReplacingSharedNamespaces: a service that rotates by
// replacing its container (rolling, restart) cannot have another service
// in its namespaces; signal can, and a service that joins another rotates.
func TestRefusesReplacingSharedNamespaces(t *testing.T) {
	for _, key := range []string{"network_mode", "pid", "ipc"} {
		services := `  web:
    image: x
    environment: {A: dso://x/y}
  side:
    image: x
    ` + key + `: "service:web"
`
		for _, st := range []config.Strategy{config.StrategyRolling, config.StrategyRestart} {
			_, err := strategyPlan(t, st, services, Image{Cmd: []string{"serve"}})
			if err == nil || !strings.Contains(err.Error(), `service "web": service "side" joins it (`+key+`: "service:web")`) || !strings.Contains(err.Error(), "dso.update.strategy: signal") {
				t.Errorf("%s, %s: %v; want the refusal naming both services and the way out", key, st, err)
			}
		}
		if _, err := strategyPlan(t, config.StrategySignal, services, Image{Cmd: []string{"serve"}}); err != nil {
			t.Errorf("%s, signal: %v", key, err)
		}
	}
	if _, err := rollingPlan(t, `  web:
    image: x
  side:
    image: x
    network_mode: "service:web"
    environment: {A: dso://x/y}
`, Image{Cmd: []string{"serve"}}); err != nil {
		t.Errorf("the joining service rotates: %v", err)
	}
}

func TestBindingsRoundTrip(t *testing.T) {
	b := Bindings{{IP: "127.0.0.1", Port: 8080, Target: 80}, {Port: 3306, Target: 3306}, {IP: "::1", Port: 9000, Target: 90}}
	s := b.String()
	if s != "127.0.0.1:8080:80,:3306:3306,[::1]:9000:90" {
		t.Fatalf("String() = %q", s)
	}
	got, err := ParseBindings(s)
	if err != nil || !reflect.DeepEqual(got, b) {
		t.Fatalf("ParseBindings(%q) = %+v, %v; want %+v", s, got, err, b)
	}
	for _, bad := range []string{"", "8080", "8080:80", "x:8080:80", ":0:80", ":8080:70000", "127.0.0.1:8080:", "[::1:9000:90"} {
		if _, err := ParseBindings(bad); err == nil {
			t.Errorf("ParseBindings(%q): no error", bad)
		}
	}
}

// TestAgentBindsFixedHostPorts: with Wiring.BindHostPorts a proxy whose
// host ports are all fixed publishes none through Docker and lists them in
// its label for the agent, bind addresses kept; one with a port the engine
// picks keeps Docker's publishing.
func TestAgentBindsFixedHostPorts(t *testing.T) {
	w := Wiring{BindHostPorts: true, Strategy: func(types.ServiceConfig) config.Strategy { return config.StrategyRolling }}
	plan, err := wiredPlan(t, w, `  web:
    image: x
    environment: {A: dso://x/y}
    ports: ["8080:80", "127.0.0.1:8443:443/tcp", "[::1]:9000:90"]
  api:
    image: x
    environment: {A: dso://x/y}
    ports: ["80"]
`, Image{Cmd: []string{"serve"}})
	var doc struct {
		Services map[string]struct {
			Ports  []map[string]any
			Labels map[string]string
		}
	}
	decodeOverride(t, plan, err, &doc)
	web, api := doc.Services["web-dso-proxy"], doc.Services["api-dso-proxy"]
	if len(web.Ports) != 0 || web.Labels[LabelProxyListen] != ":8080:80,127.0.0.1:8443:443,[::1]:9000:90" {
		t.Errorf("web's proxy: ports %v, label %q; want no ports and every binding in the label", web.Ports, web.Labels[LabelProxyListen])
	}
	if len(api.Ports) != 1 || api.Labels[LabelProxyListen] != "" {
		t.Errorf("api's proxy (a port the engine picks): ports %v, label %q; want Docker's publishing", api.Ports, api.Labels[LabelProxyListen])
	}
}

// FuzzParseBindings: the label LabelProxyListen, read back from a
// container, never panics the parser, and what it accepts writes back to
// a label that reads the same.
func FuzzParseBindings(f *testing.F) {
	for _, s := range []string{":8080:80", "127.0.0.1:8443:443,[::1]:9000:90", "[::1:9000:90", ":0:1", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, label string) {
		b, err := ParseBindings(label)
		if err != nil {
			return
		}
		again, err := ParseBindings(b.String())
		if err != nil || !reflect.DeepEqual(again, b) {
			t.Fatalf("%q parsed to %+v, written as %q, read back as %+v, %v", label, b, b.String(), again, err)
		}
	})
}

// TestProxySchedulingLabel: dso.proxy.scheduling: normal or batch reaches
// the proxy's command line; auto is the default; another value stops the
// plan, naming the service, the label and the value.
func TestProxySchedulingLabel(t *testing.T) {
	for _, tt := range []struct{ label, want, err string }{
		{"", "/.dso/init proxy --backend web --port 80", ""},
		{"labels: {dso.proxy.scheduling: auto}", "/.dso/init proxy --backend web --port 80", ""},
		{"labels: {dso.proxy.scheduling: normal}", "/.dso/init proxy --backend web --port 80 --scheduling normal", ""},
		{"labels: {dso.proxy.scheduling: batch}", "/.dso/init proxy --backend web --port 80 --scheduling batch", ""},
		{"labels: {dso.proxy.scheduling: fifo}", "", `service "web", label dso.proxy.scheduling "fifo": want auto, normal or batch`},
	} {
		plan, err := rollingPlan(t, "  web:\n    image: x\n    environment: {A: dso://x/y}\n    ports: [\"8080:80\"]\n    "+tt.label+"\n", Image{Cmd: []string{"serve"}})
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: got %v, want an error with %q", tt.label, err, tt.err)
			}
			continue
		}
		var doc struct {
			Services map[string]struct{ Entrypoint []string }
		}
		decodeOverride(t, plan, err, &doc)
		if got := strings.Join(doc.Services["web-dso-proxy"].Entrypoint, " "); got != tt.want {
			t.Errorf("%q: proxy entrypoint %q, want %q", tt.label, got, tt.want)
		}
	}
}
