// Package control is the agent's side of the proxy's control: it reaches
// the proxy's control socket from the host when it can (Direct, package
// containersock), else it runs `dso-init proxy-ctl` in the proxy container
// with `docker exec`, the request on stdin and the reply on stdout. It is
// apart from package proxy so that dso-init, which holds the proxy, does
// not link the engine client.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/dso-project/dso/internal/containersock"
	"github.com/dso-project/dso/internal/dockerexec"
	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/proxy"
)

// Docker is the part of the engine client the control uses.
type Docker = dockerexec.Docker

// ErrSessionLost means a Session broke (or the proxy's dso-init has no
// sessions): the request may or may not have been taken.
var ErrSessionLost = errors.New("control session lost")

// Session is one `dso-init proxy-ctl --session` in a proxy container: a
// request through it costs no docker exec. It is not safe for concurrent
// use.
type Session struct {
	container string
	s         *dockerexec.Session
}

// Open starts a Session in the proxy running in container.
func Open(ctx context.Context, d Docker, container string) (*Session, error) {
	s, err := dockerexec.Start(ctx, d, container, []string{initproc.InitPath, "proxy-ctl", "--session"}, proxy.MaxReply+4096)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSessionLost, err)
	}
	return &Session{container: container, s: s}, nil
}

// Send is Send through the session; after an error wrapping
// ErrSessionLost, Close it.
func (s *Session) Send(ctx context.Context, req proxy.Request) (proxy.Reply, error) {
	data, err := encode(req)
	if err != nil {
		return proxy.Reply{}, err
	}
	out, err := s.s.Exchange(ctx, data)
	if err != nil {
		return proxy.Reply{}, fmt.Errorf("%w: proxy %s in container %s: %w", ErrSessionLost, req.Op, dockerexec.Short(s.container), err)
	}
	var reply proxy.Reply
	if err := json.Unmarshal(out, &reply); err != nil {
		return proxy.Reply{}, fmt.Errorf("%w: proxy %s in container %s: no valid reply", ErrSessionLost, req.Op, dockerexec.Short(s.container))
	}
	if reply.Error != "" {
		return proxy.Reply{}, fmt.Errorf("proxy %s in container %s: %s", req.Op, dockerexec.Short(s.container), reply.Error)
	}
	return reply, nil
}

// Close ends the session.
func (s *Session) Close() { s.s.Close() }

// Direct passes req to the proxy of container c, as inspected just before,
// through its control socket reached from the host (a millisecond, where an
// exec takes tens). handled is false when that way is closed here: Send or
// a Session takes the request instead. Errors are as Send's.
func Direct(ctx context.Context, c container.InspectResponse, req proxy.Request) (reply proxy.Reply, handled bool, err error) {
	data, err := encode(req)
	if err != nil {
		return proxy.Reply{}, true, err
	}
	handled, err = containersock.Do(ctx, c, proxy.ControlPath, socketWait, func(conn *net.UnixConn) (err error) {
		proxy.CloseFiles(reply.Files) // an earlier try's
		reply, _, err = proxy.Exchange(conn, data, req.Files...)
		return err
	})
	if err == nil && reply.Error != "" {
		err = errors.New(reply.Error)
	}
	if !handled || err != nil || req.Op != proxy.OpListeners {
		// Only a listeners reply carries sockets the caller takes.
		proxy.CloseFiles(reply.Files)
		reply.Files = nil
	}
	switch {
	case !handled:
		return proxy.Reply{}, false, nil
	case err != nil:
		return proxy.Reply{}, true, fmt.Errorf("proxy %s in container %s: %w", req.Op, dockerexec.Short(c.ID), err)
	}
	return reply, true, nil
}

// socketWait bounds Direct's wait for a control socket not listening yet
// (a proxy that has just started).
const socketWait = 2 * time.Second

// Send passes req to the proxy running in container and returns its reply.
// The proxy's own errors (bad input, a probe that failed, a drain of a
// backend still in use) come back as the error, with the op and container.
func Send(ctx context.Context, d Docker, container string, req proxy.Request) (proxy.Reply, error) {
	if len(req.Files) > 0 {
		return proxy.Reply{}, fmt.Errorf("proxy %s in container %s: sockets cannot be passed through docker exec", req.Op, dockerexec.Short(container))
	}
	data, err := encode(req)
	if err != nil {
		return proxy.Reply{}, err
	}
	res, err := dockerexec.Run(ctx, d, container, []string{initproc.InitPath, "proxy-ctl"}, data, proxy.MaxReply+4096)
	if err != nil {
		return proxy.Reply{}, fmt.Errorf("proxy %s: %w", req.Op, err)
	}
	if res.ExitCode != 0 {
		msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(res.Stderr)), "dso-init proxy-ctl:"))
		if msg == "" {
			msg = fmt.Sprintf("exit code %d", res.ExitCode)
		}
		return proxy.Reply{}, fmt.Errorf("proxy %s in container %s: %s", req.Op, dockerexec.Short(container), msg)
	}
	var reply proxy.Reply
	if err := json.Unmarshal(res.Stdout, &reply); err != nil {
		return proxy.Reply{}, fmt.Errorf("proxy %s in container %s: no valid reply", req.Op, dockerexec.Short(container))
	}
	return reply, nil
}

// encode checks req and writes it as the control protocol carries it.
func encode(req proxy.Request) ([]byte, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(req)
}
