package systemcmd

import (
	"errors"
	"testing"

	"github.com/dso-project/dso/internal/cmdutil"
	"github.com/dso-project/dso/internal/iostreams"
	"github.com/dso-project/dso/internal/systemd"
)

func TestUnitPrintsWhatBootstrapWrites(t *testing.T) {
	run := func(args ...string) (string, error) {
		ios, _, out, _ := iostreams.Test()
		cmd := NewCmd(&cmdutil.Factory{IO: ios}, nil)
		cmd.SetArgs(append([]string{"unit"}, args...))
		cmd.SetOut(ios.Out)
		cmd.SetErr(ios.ErrOut)
		cmd.SetFlagErrorFunc(cmdutil.UsageError)
		err := cmd.Execute()
		return out.String(), err
	}
	const bin = "/usr/libexec/docker/cli-plugins/docker-dso"
	got, err := run("--binary", bin)
	if err != nil || got != systemd.Unit(bin) {
		t.Fatalf("unit --binary %s: %v\n%s", bin, err, got)
	}
	self, err := systemd.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := run(); err != nil || got != systemd.Unit(self) {
		t.Fatalf("unit: %v\n%s", err, got)
	}
	_, err = run("--binary", "docker-dso")
	var ee *cmdutil.ExitError
	if !errors.As(err, &ee) || ee.Code != cmdutil.ExitUsage {
		t.Fatalf("a relative --binary: %v, want a usage error", err)
	}
}
