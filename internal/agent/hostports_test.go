package agent

import (
	"net"
	"testing"

	"github.com/dso-project/dso/internal/compose"
	"github.com/dso-project/dso/internal/proxy"
)

// TestListenAsDockerPublishes: a binding with 0.0.0.0 takes IPv4 only, as
// Docker publishes it (Go alone would listen on IPv6 too), and the proxy's
// listener is then recognised as that binding.
func TestListenAsDockerPublishes(t *testing.T) {
	for _, ip := range []string{"0.0.0.0", "127.0.0.1"} {
		ln, err := compose.Binding{IP: ip, Port: 0, Target: 80}.Listen()
		if err != nil {
			t.Fatal(err)
		}
		a := ln.Addr().(*net.TCPAddr)
		ln.Close()
		if a.IP.String() != ip {
			t.Errorf("binding %s listens on %s", ip, a)
		}
		if !adopted([]proxy.Port{{Listen: a.Port, Target: 80, Addr: a.IP.String()}}, compose.Binding{IP: ip, Port: a.Port, Target: 80}) {
			t.Errorf("a proxy listening on %s is not seen holding the binding %s:%d", a, ip, a.Port)
		}
	}
	if adopted([]proxy.Port{{Listen: 8080, Target: 80, Addr: "127.0.0.1"}}, compose.Binding{Port: 8080, Target: 80}) {
		t.Error("a listener on 127.0.0.1 was taken for the binding of every address")
	}
}
