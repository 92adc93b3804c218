package proxy

import (
	"encoding/json"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// hostListener binds a listening socket on 127.0.0.1, as the agent does on
// the host, and returns it as a file to pass.
func hostListener(t *testing.T) (addr string, f *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err = ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return ln.Addr().String(), f
}

// listenReq passes files to the proxy's control socket with a listen request.
func listenReq(t *testing.T, sock string, targets []int, files ...*os.File) Reply {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req, _ := json.Marshal(Request{Op: OpListen, Targets: targets})
	r, _, err := Exchange(c, req, files...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestAdoptedListenerForwardsToItsTarget: a socket passed over the control
// socket is served like the proxy's own ports, each to its own target, and
// shows in the stats with its address; the passed copy can be closed.
func TestAdoptedListenerForwardsToItsTarget(t *testing.T) {
	web := startBackend(t, "127.0.0.1:0", "web")
	admin := startBackend(t, "127.0.0.1:0", "admin")
	p := startProxy(t, Options{Ports: []Port{{Target: web.port()}, {Target: admin.port()}}, Backend: "127.0.0.1"})
	sock := startControl(t, p)
	webAddr, webFile := hostListener(t)
	adminAddr, adminFile := hostListener(t)
	if r := listenReq(t, sock, []int{admin.port(), web.port()}, adminFile, webFile); r.Error != "" {
		t.Fatalf("listen: %s", r.Error)
	}
	webFile.Close()
	adminFile.Close()
	for range 10 {
		if got := greeting(t, webAddr); got != "web" {
			t.Fatalf("adopted web listener reached %q", got)
		}
		if got := greeting(t, adminAddr); got != "admin" {
			t.Fatalf("adopted admin listener reached %q", got)
		}
	}
	found := 0
	for _, ps := range p.Stats().Ports {
		if ps.Addr == "127.0.0.1" && net.JoinHostPort(ps.Addr, strconv.Itoa(ps.Listen)) == webAddr {
			found++
			if ps.Target != web.port() || ps.Accepted != 10 {
				t.Errorf("web listener stats %+v: want target %d, 10 accepted", ps, web.port())
			}
		}
	}
	if found != 1 {
		t.Fatalf("stats list the adopted listener %s %d times: %+v", webAddr, found, p.Stats().Ports)
	}
}

// TestListenersGivesCopiesBack: the listeners op lists the adopted host
// listeners, not the proxy's own ports, and passes a copy of each: a copy
// that outlives the proxy's keeps the port listening, and a client that
// connects meanwhile waits in its backlog for the next proxy.
func TestListenersGivesCopiesBack(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	sock := startControl(t, p)
	addr, f := hostListener(t)
	if r := listenReq(t, sock, []int{b.port()}, f); r.Error != "" {
		t.Fatalf("listen: %s", r.Error)
	}
	f.Close()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := Exchange(c, []byte(`{"op":"listeners"}`))
	c.Close()
	if err != nil || r.Error != "" {
		t.Fatalf("listeners: %v %s", err, r.Error)
	}
	defer CloseFiles(r.Files)
	if len(r.Ports) != 1 || len(r.Files) != 1 || net.JoinHostPort(r.Ports[0].Addr, strconv.Itoa(r.Ports[0].Listen)) != addr || r.Ports[0].Target != b.port() {
		t.Fatalf("listeners: %+v with %d sockets, want %s to %d with one", r.Ports, len(r.Files), addr, b.port())
	}
	ln, err := ListenerOf(r.Files[0])
	if err != nil {
		t.Fatalf("the copy is not a listener: %v", err)
	}
	defer ln.Close()
	if ln.Addr().String() != addr {
		t.Fatalf("the copy listens on %s, want %s", ln.Addr(), addr)
	}
	p.closeListeners() // the proxy goes; the copy keeps the port
	client, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("connecting while only the copy listens: %v", err)
	}
	client.Close()
	if got, err := ln.Accept(); err != nil {
		t.Fatalf("the copy did not queue the client: %v", err)
	} else {
		got.Close()
	}
}

// TestListenRefusesWhatIsNotAListener: a listen request without sockets, with
// a socket that does not listen, a file, a target the proxy does not
// forward, or sockets with another op, is refused and changes nothing.
func TestListenRefusesWhatIsNotAListener(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0", "b1")
	p := startProxy(t, Options{Ports: []Port{{Target: b.port()}}, Backend: "127.0.0.1"})
	sock := startControl(t, p)
	_, good := hostListener(t)
	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(b.port()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	connected, _ := conn.(*net.TCPConn).File()
	defer connected.Close()
	plain, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for _, tc := range []struct {
		name    string
		targets []int
		files   []*os.File
		want    string
	}{
		{"no socket", []int{b.port()}, nil, "1 target ports for 0 sockets passed"},
		{"connected socket", []int{b.port()}, []*os.File{connected}, "not a listening socket"},
		{"a file", []int{b.port()}, []*os.File{plain}, "socket 0:"},
		{"other target", []int{1}, []*os.File{good}, "target port 1 is not one this proxy forwards"},
		{"no targets", nil, []*os.File{good}, "targets must list 1 to"},
	} {
		if r := listenReq(t, sock, tc.targets, tc.files...); !strings.Contains(r.Error, tc.want) {
			t.Errorf("%s: error %q, want it to contain %q", tc.name, r.Error, tc.want)
		}
	}
	c, _ := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	defer c.Close()
	if r, _, err := Exchange(c, []byte(`{"op":"stats"}`), good); err != nil || !strings.Contains(r.Error, "stats: takes no sockets") {
		t.Errorf("stats with a socket: %v, %q", err, r.Error)
	}
	if n := len(p.Stats().Ports); n != 1 {
		t.Fatalf("refused requests left %d listeners, want 1", n)
	}
}

// FuzzParseRequest: no request read from the control socket panics the
// parser, and an accepted one written again parses the same.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"op":"listen","targets":[80,443]}`, `{"op":"set","backends":["web"]}`, `{"op":"drain","backend":"10.0.0.2","timeout":"30s"}`, `{"op":"hold"}`, `{"op":"stats"}`, `{"op":"listeners"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRequest(data)
		if err != nil {
			return
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseRequest(out)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("%s parsed to %+v, written as %s, read back as %+v, %v", data, r, out, again, err)
		}
	})
}
