package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestPortFlag(t *testing.T) {
	var f portsFlag
	for _, v := range []string{"80", "443:8443"} {
		if err := f.Set(v); err != nil {
			t.Fatalf("--port %s: %v", v, err)
		}
	}
	if want := (portsFlag{{Listen: 80, Target: 80}, {Listen: 443, Target: 8443}}); !reflect.DeepEqual(f, want) {
		t.Fatalf("ports = %v, want %v", f, want)
	}
	for _, v := range []string{"", "0", "http", "80:", ":80", "80:70000", "80:81:82", "-1"} {
		if err := f.Set(v); err == nil || !strings.Contains(err.Error(), "is not LISTEN[:TARGET]") {
			t.Errorf("--port %q: error %v", v, err)
		}
	}
}

func TestProxyRefusesBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"--backend", "app"},
		{"--port", "80"},
		{"--port", "80", "--backend", "app", "extra"},
		{"--port", "80", "--backend", "app", "--hold-timeout", "0s"},
		{"--port", "80", "--backend", "app", "--hold-timeout", "2h"},
		{"--port", "80", "--backend", "app", "--colour", "red"},
		{"--port", "80", "--backend", "app", "--scheduling", "fifo"},
	} {
		if code := runProxy(args); code != 2 {
			t.Errorf("dso-init proxy %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
	if code := runProxy([]string{"--port", "80", "--backend", "not a host", "--control", t.TempDir() + "/p.sock"}); code != 1 {
		t.Errorf("a bad --backend: exit %d, want 1", code)
	}
}
