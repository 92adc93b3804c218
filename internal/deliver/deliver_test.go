package deliver

import (
	"testing"

	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/secretref"
)

func TestNewPayloadCarriesFilePerms(t *testing.T) {
	p := NewPayload([]Value{
		{Var: "KEY", File: true, Perm: secretref.Perm{GID: 70, Mode: 0o440, HasGID: true, HasMode: true}, Data: []byte("k")},
		{Var: "CERT", File: true, Data: []byte("c")},
		{Var: "TOKEN", Data: []byte("t")},
	}, "")
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	want := initproc.FilePerm{UID: -1, GID: 70, Mode: 0o440} // the uid not set keeps the init's own
	if len(p.Perms) != 1 || p.Perms["KEY"] != want {
		t.Errorf("perms %+v, want only KEY: %+v", p.Perms, want)
	}
	if string(p.Env["KEY"]) != "/run/dso/secrets/KEY" || string(p.Env["TOKEN"]) != "t" {
		t.Errorf("env %q", p.Env)
	}
}
