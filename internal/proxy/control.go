package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ControlPath is where the proxy's control socket lives in its container
// (a tmpfs the compose wiring mounts).
const ControlPath = "/run/dso/proxy.sock"

// Bounds of the control protocol.
const (
	MaxRequest  = 16 << 10
	MaxReply    = 64 << 10
	MaxBackends = 64
	MaxTimeout  = time.Hour
)

// Operations of a Request.
const (
	OpSet   = "set"   // Backends: new connections go to them; ends a hold
	OpHold  = "hold"  // Timeout (optional): new connections wait for the next set
	OpDrain = "drain" // Backend, Timeout: wait for its connections, then close them
	OpProbe = "probe" // Backend, Timeout: TCP-connect to every target port
	OpStats = "stats" // counters and state
	// OpListen comes with listening sockets (SCM_RIGHTS) the proxy
	// forwards from, Targets naming each one's target port (see Adopt).
	OpListen = "listen"
	// OpListeners asks for copies of the listeners the proxy adopted: the
	// reply lists them (Ports) and carries them (SCM_RIGHTS) in that
	// order, for an agent that started after it handed them over.
	OpListeners = "listeners"
	// OpSockets comes with unconnected TCP sockets made in the host's
	// network namespace (SCM_RIGHTS, at most MaxListeners), for new
	// connections to backends within Prefixes (see hostSockets); the reply
	// says how many more the proxy would take (Want), at once or, with a
	// Timeout, once its supply fell under half or the timeout passed.
	OpSockets = "sockets"
)

// Request is one order to the proxy, sent as one JSON object per control
// connection, such as {"op":"drain","backend":"172.18.0.5","timeout":"30s"}.
type Request struct {
	Op       string   `json:"op"`
	Backends []string `json:"backends,omitempty"`
	Backend  string   `json:"backend,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
	Targets  []int    `json:"targets,omitempty"`
	Prefixes []string `json:"prefixes,omitempty"`
	// Files are the sockets that came with the request (listen, sockets).
	Files []*os.File `json:"-"`
}

// Reply is the proxy's answer to a Request: Error, or what the op returns.
type Reply struct {
	Error      string       `json:"error,omitempty"`
	SwitchedAt time.Time    `json:"switched_at,omitzero"` // set
	Drain      *DrainResult `json:"drain,omitempty"`      // drain
	Stats      *Stats       `json:"stats,omitempty"`      // stats
	Ports      []Port       `json:"ports,omitempty"`      // listeners
	Want       int          `json:"want,omitempty"`       // sockets
	// Files are the sockets that came with the reply (listeners).
	Files []*os.File `json:"-"`
}

// Duration is a time.Duration written in JSON as Go writes durations ("30s").
type Duration time.Duration

// MarshalText writes d as "1m30s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a Go duration such as "500ms" or "30s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return errors.New("timeout is not a duration such as 30s or 500ms")
	}
	*d = Duration(v)
	return nil
}

// Validate checks r against its op; the error names the field at fault.
func (r Request) Validate() error {
	timeout := func(optional bool) error {
		switch t := time.Duration(r.Timeout); {
		case t == 0 && optional:
			return nil
		case t <= 0 || t > MaxTimeout:
			return fmt.Errorf("%s: timeout must be more than 0 and at most %s, not %s", r.Op, MaxTimeout, t)
		}
		return nil
	}
	none := func(fields ...string) error {
		for _, f := range fields {
			if (f == "backends" && r.Backends != nil) || (f == "backend" && r.Backend != "") || (f == "timeout" && r.Timeout != 0) ||
				(f == "targets" && r.Targets != nil) || (f == "prefixes" && r.Prefixes != nil) {
				return fmt.Errorf("%s: takes no %s", r.Op, f)
			}
		}
		return nil
	}
	switch r.Op {
	case OpSet:
		if err := none("backend", "timeout", "targets", "prefixes"); err != nil {
			return err
		}
		return validBackends(r.Backends)
	case OpHold:
		if err := none("backends", "backend", "targets", "prefixes"); err != nil {
			return err
		}
		return timeout(true)
	case OpDrain, OpProbe:
		if err := none("backends", "targets", "prefixes"); err != nil {
			return err
		}
		if err := ValidHost(r.Backend); err != nil {
			return fmt.Errorf("%s: backend: %w", r.Op, err)
		}
		return timeout(false)
	case OpStats, OpListeners:
		return none("backends", "backend", "timeout", "targets", "prefixes")
	case OpListen:
		if err := none("backends", "backend", "timeout", "prefixes"); err != nil {
			return err
		}
		if len(r.Targets) == 0 || len(r.Targets) > MaxListeners {
			return fmt.Errorf("listen: targets must list 1 to %d ports, not %d", MaxListeners, len(r.Targets))
		}
		for i, t := range r.Targets {
			if t < 1 || t > 65535 {
				return fmt.Errorf("listen: targets[%d]: %d is not a port within 1-65535", i, t)
			}
		}
		return nil
	case OpSockets:
		if err := none("backends", "backend", "targets"); err != nil {
			return err
		}
		if _, err := r.prefixes(); err != nil {
			return err
		}
		return timeout(true)
	case "":
		return errors.New("no op (one of set, hold, drain, probe, stats, listen, listeners, sockets)")
	}
	return fmt.Errorf("unknown op %q (one of set, hold, drain, probe, stats, listen, listeners, sockets)", r.Op)
}

// prefixes reads the IPv4 prefixes of a sockets request.
func (r Request) prefixes() ([]netip.Prefix, error) {
	if len(r.Prefixes) == 0 || len(r.Prefixes) > MaxPrefixes {
		return nil, fmt.Errorf("sockets: prefixes must list 1 to %d IPv4 prefixes, not %d", MaxPrefixes, len(r.Prefixes))
	}
	out := make([]netip.Prefix, len(r.Prefixes))
	for i, s := range r.Prefixes {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() || p != p.Masked() {
			if len(s) > 64 {
				s = s[:64] + "..."
			}
			return nil, fmt.Errorf("sockets: prefixes[%d]: %q is not an IPv4 prefix such as 172.18.0.0/16", i, s)
		}
		out[i] = p
	}
	return out, nil
}

func validBackends(hosts []string) error {
	if len(hosts) == 0 || len(hosts) > MaxBackends {
		return fmt.Errorf("set: backends must list 1 to %d hosts, not %d", MaxBackends, len(hosts))
	}
	for i, h := range hosts {
		if err := ValidHost(h); err != nil {
			return fmt.Errorf("set: backends[%d]: %w", i, err)
		}
	}
	return nil
}

var dnsLabel = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)

// ValidHost accepts an IP address or a DNS name (such as a compose service
// name, which may hold '_').
func ValidHost(h string) error {
	if h == "" {
		return errors.New("no host given")
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if len(h) <= 253 {
		ok := true
		for _, l := range strings.Split(strings.TrimSuffix(h, "."), ".") {
			ok = ok && dnsLabel.MatchString(l)
		}
		if ok {
			return nil
		}
	}
	if len(h) > 64 {
		h = h[:64] + "..."
	}
	return fmt.Errorf("%q is not an IP address or a DNS name", h)
}

// Handle carries out one request; errors go into the reply.
func (p *Proxy) Handle(ctx context.Context, r Request) Reply {
	if err := r.Validate(); err != nil {
		return Reply{Error: err.Error()}
	}
	switch r.Op {
	case OpSet:
		at, err := p.Set(r.Backends)
		if err != nil {
			return Reply{Error: err.Error()}
		}
		return Reply{SwitchedAt: at}
	case OpHold:
		p.Hold(time.Duration(r.Timeout))
		return Reply{}
	case OpDrain:
		res, err := p.Drain(ctx, r.Backend, time.Duration(r.Timeout))
		if err != nil {
			return Reply{Error: err.Error()}
		}
		return Reply{Drain: &res}
	case OpProbe:
		if err := p.Probe(ctx, r.Backend, time.Duration(r.Timeout)); err != nil {
			return Reply{Error: err.Error()}
		}
		return Reply{}
	case OpListen:
		if err := p.Adopt(r.Targets, r.Files); err != nil {
			return Reply{Error: err.Error()}
		}
		return Reply{}
	case OpSockets:
		prefixes, _ := r.prefixes() // Validate read them
		want, err := p.Supply(ctx, prefixes, r.Files, time.Duration(r.Timeout))
		if err != nil {
			return Reply{Error: err.Error()}
		}
		return Reply{Want: want}
	case OpListeners:
		ports, files, err := p.Adopted()
		if err != nil {
			return Reply{Error: err.Error()}
		}
		return Reply{Ports: ports, Files: files}
	default: // OpStats
		s := p.Stats()
		return Reply{Stats: &s}
	}
}

// ParseRequest decodes one request of at most MaxRequest bytes and
// validates it.
func ParseRequest(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxRequest {
		return r, fmt.Errorf("request larger than %d bytes", MaxRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("malformed request: %s", jsonReason(err))
	}
	if dec.More() {
		return Request{}, errors.New("malformed request: more than one JSON value")
	}
	return r, r.Validate()
}

// jsonReason describes a decoding error without quoting the input.
func jsonReason(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "empty"
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
		return "not valid JSON"
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return err.Error()
}

// ListenControl creates the control socket at path, mode 0600, replacing a
// stale one left by an earlier run.
func ListenControl(path string) (*net.UnixListener, error) {
	_ = os.Remove(path)
	old := unix.Umask(0o077)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// ServeControl answers requests on ln until ctx ends: one request per
// connection, read until the client half-closes, and one reply.
func (p *Proxy) ServeControl(ctx context.Context, ln *net.UnixListener) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		wg.Go(func() { p.serveControlConn(ctx, c) })
	}
}

// Run forwards opts's ports and answers on the control socket at
// controlPath until ctx ends (see Serve); it is `dso-init proxy`.
func Run(ctx context.Context, opts Options, controlPath string) error {
	p, err := Listen(opts)
	if err != nil {
		return err
	}
	ln, err := ListenControl(controlPath)
	if err != nil {
		p.closeListeners()
		return err
	}
	ctl := make(chan struct{})
	go func() { p.ServeControl(ctx, ln); close(ctl) }()
	err = p.Serve(ctx)
	<-ctl
	return err
}

// requestTimeout bounds the read of a request: a client that never ends
// its request gets an error, and its connection is closed.
var requestTimeout = 10 * time.Second

func (p *Proxy) serveControlConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	data, files, err := readMessage(c, "request", MaxRequest)
	defer func() { CloseFiles(files) }() // but those the proxy keeps
	var reply Reply
	defer func() { CloseFiles(reply.Files) }()
	if err != nil {
		reply.Error = "reading the request: " + err.Error()
	} else if r, err := ParseRequest(data); err != nil {
		reply.Error = err.Error()
		p.log.Warn("control request refused", "error", reply.Error)
	} else if len(files) > 0 && r.Op != OpListen && r.Op != OpSockets {
		reply.Error = r.Op + ": takes no sockets"
	} else {
		// Errors of a valid request (a probe of a backend still starting)
		// go back to the agent, which logs what matters.
		r.Files = files
		if r.Op == OpSockets {
			files = nil // the proxy keeps them
		}
		reply = p.Handle(ctx, r)
	}
	out, _ := json.Marshal(reply)
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	writeMessage(c, append(out, '\n'), reply.Files)
}

// writeMessage writes data with files passed along (SCM_RIGHTS), all of
// data even when the first write takes part of it.
func writeMessage(c *net.UnixConn, data []byte, files []*os.File) error {
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	n, _, err := c.WriteMsgUnix(data, oob, nil)
	if err == nil && n < len(data) {
		_, err = c.Write(data[n:])
	}
	return err
}

// CloseFiles closes files (sockets passed with a request or a reply).
func CloseFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// CtlSession is `dso-init proxy-ctl --session`: it passes each request
// read from in, one a line, to the proxy listening on socket as Ctl does,
// and writes each reply as one line to out (an error as {"error":...}),
// until in ends. The agent keeps one open during a rotation: a request then
// costs no docker exec.
func CtlSession(in io.Reader, out io.Writer, socket string) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 4096), MaxRequest)
	for sc.Scan() {
		reply, err := Ctl(bytes.NewReader(sc.Bytes()), socket)
		if err != nil {
			reply, _ = json.Marshal(Reply{Error: err.Error()})
		}
		if _, err := out.Write(append(bytes.TrimSpace(reply), '\n')); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Ctl is `dso-init proxy-ctl`: it passes the request read from in to the
// proxy listening on socket and returns the proxy's reply, or its error.
func Ctl(in io.Reader, socket string) ([]byte, error) {
	req, err := io.ReadAll(io.LimitReader(in, MaxRequest+1))
	if err != nil {
		return nil, fmt.Errorf("read request: %v", err)
	}
	if len(req) > MaxRequest {
		return nil, fmt.Errorf("request larger than %d bytes", MaxRequest)
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("the proxy is not listening on %s: %v", socket, err)
	}
	defer c.Close()
	reply, out, err := Exchange(c, req)
	CloseFiles(reply.Files) // none can go through a docker exec
	if err != nil {
		return nil, err
	}
	if reply.Error != "" {
		return nil, errors.New(reply.Error)
	}
	return out, nil
}

// readMessage reads a request or a reply (at most limit bytes) until the
// other side ends it, with the descriptors that came with it (at most
// MaxListeners).
func readMessage(c *net.UnixConn, what string, limit int) (data []byte, files []*os.File, err error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*MaxListeners))
	for {
		n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
		// On an error (a deadline, a close) n is -1.
		data = append(data, buf[:max(n, 0)]...)
		if oobn > 0 {
			msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					files = append(files, os.NewFile(uintptr(fd), "passed socket"))
				}
			}
			if perr != nil || flags&unix.MSG_CTRUNC != 0 || len(files) > MaxListeners {
				return nil, files, fmt.Errorf("more than %d sockets passed", MaxListeners)
			}
		}
		switch {
		case len(data) > limit:
			return nil, files, fmt.Errorf("%s larger than %d bytes", what, limit)
		case errors.Is(err, io.EOF) || err == nil && n == 0 && oobn == 0:
			return data, files, nil
		case err != nil:
			return nil, files, err
		}
	}
}

// Exchange sends one request, with files (listen), on a new connection to
// the control socket and returns the proxy's reply, decoded (with the
// sockets that came with it: listeners; the caller closes them) and as it
// came.
func Exchange(c *net.UnixConn, req []byte, files ...*os.File) (Reply, []byte, error) {
	if err := writeMessage(c, req, files); err != nil {
		return Reply{}, nil, fmt.Errorf("send request: %v", err)
	}
	c.CloseWrite()
	out, got, err := readMessage(c, "reply", MaxReply)
	var reply Reply
	if err == nil && json.Unmarshal(out, &reply) != nil {
		err = errors.New("the proxy sent no valid reply")
	}
	if err != nil {
		CloseFiles(got)
		return Reply{}, nil, fmt.Errorf("read reply: %v", err)
	}
	reply.Files = got
	return reply, out, nil
}
