package systemcmd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dso-project/dso/internal/api"
	"github.com/dso-project/dso/internal/api/events"
	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/iostreams"
	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/systemd"
)

func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	var got *Options
	cmd := NewCmd(&cmdutil.Factory{IO: ios}, func(o *Options) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(ios.Out)
	cmd.SetErr(ios.ErrOut)
	cmd.SetFlagErrorFunc(cmdutil.UsageError)
	return got, cmd.Execute()
}

func TestFlags(t *testing.T) {
	for _, a := range []string{"enable", "disable", "status", "restart"} {
		if o, err := parse(t, a); err != nil || o.Action != a {
			t.Errorf("%s: %+v %v", a, o, err)
		}
	}
	t.Setenv("DSO_API_TOKEN", "tok")
	o, err := parse(t, "logs", "-f", "-p", "err", "--since", "1h", "--api", "--api-addr", "http://localhost:9000")
	if err != nil || !o.Follow || o.Priority != "err" || o.Since != "1h" || !o.API || o.APIAddr != "http://localhost:9000" || o.APIToken != "tok" {
		t.Fatalf("logs: %+v %v", o, err)
	}
	for _, bad := range [][]string{{"logs", "-p", "error"}, {"logs", "--since", "last week"}, {"logs", "--api-addr", "http://x:1"}, {"status", "x"}, {"logs", "--nope"}} {
		_, err := parse(t, bad...)
		var ee *cmdutil.ExitError
		if !errors.As(err, &ee) || ee.Code != cmdutil.ExitUsage {
			t.Errorf("%v: %v, want a usage error", bad, err)
		}
	}
}

func TestNoSystemdIsAClearError(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	t.Setenv("PATH", t.TempDir())
	for _, o := range []*Options{{Action: "status"}, {Action: "logs"}} {
		o.Factory = &cmdutil.Factory{IO: ios}
		var err error
		if o.Action == "logs" {
			err = runJournal(context.Background(), o)
		} else {
			err = runSystemctl(context.Background(), o)
		}
		if !errors.Is(err, systemd.ErrNoSystemd) || !strings.Contains(err.Error(), "docker dso agent") {
			t.Errorf("%s: %v", o.Action, err)
		}
	}
}

func TestLogsFromTheAPI(t *testing.T) {
	bus := events.NewBus(100)
	now := time.Now()
	bus.Publish(events.Event{Time: now.Add(-2 * time.Hour), Type: events.TypeLog, Level: "ERROR", Message: "too old"})
	bus.Publish(events.Event{Time: now.Add(-time.Minute), Type: events.TypeLog, Level: "INFO", Message: "agent started"})
	bus.Publish(events.Event{Time: now.Add(-time.Second), Type: events.TypeRotation, Level: "ERROR", Message: "rotation failed", Service: "web", Strategy: "restart", Attrs: map[string]string{"attempt": "2"}})
	srv, err := api.NewREST(api.RESTConfig{Addr: "127.0.0.1:0", Token: "tok", Bus: bus, Registry: metrics.New().Registry,
		Health:  func(context.Context) api.AgentStatus { return api.AgentStatus{Health: api.HealthOK} },
		Trigger: func([]string) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	ios, _, out, _ := iostreams.Test()
	opts := &Options{Factory: &cmdutil.Factory{IO: ios}, API: true, APIAddr: "http://" + srv.Addr().String(), APIToken: "tok", Priority: "err", Since: "1h"}
	if err := runAPILogs(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.Count(got, "\n") != 1 || !strings.Contains(got, `ERROR rotation "rotation failed" service=web strategy=restart attempt="2"`) {
		t.Fatalf("output:\n%s", got)
	}
	opts.APIToken = ""
	if err := runAPILogs(context.Background(), opts); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("without the token: %v", err)
	}
}
