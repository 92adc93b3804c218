// Package dockerexec runs a command in a running container with `docker
// exec`, writes its standard input from memory and collects its output and
// exit code. It is how the agent talks to the DSO binaries inside
// containers (the init's delivery, the proxy's control): the data goes
// through the engine's exec stream only, never through argv or the disk.
package dockerexec

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
)

// Docker is the part of the engine client an exec uses.
type Docker interface {
	ExecCreate(ctx context.Context, container string, opts client.ExecCreateOptions) (client.ExecCreateResult, error)
	ExecAttach(ctx context.Context, execID string, opts client.ExecAttachOptions) (client.ExecAttachResult, error)
	ExecInspect(ctx context.Context, execID string, opts client.ExecInspectOptions) (client.ExecInspectResult, error)
}

// Result is what the command left: its output, each bounded by the maxOut
// given to Run, and its exit code.
type Result struct {
	Stdout, Stderr []byte
	ExitCode       int
}

// Run runs cmd in container with stdin as its standard input (closed after
// it), and waits for it to end. Errors name the container (short ID) and
// what failed; they never hold stdin. Output past maxOut bytes (both
// streams together) is dropped.
func Run(ctx context.Context, d Docker, container string, cmd []string, stdin []byte, maxOut int64) (Result, error) {
	execID, att, err := start(ctx, d, container, cmd)
	if err != nil {
		return Result{}, err
	}
	defer att.Close()
	stop := context.AfterFunc(ctx, func() { att.Conn.Close() })
	defer stop()

	writeErr := make(chan error, 1)
	go func() {
		_, err := att.Conn.Write(stdin)
		if cw, ok := att.Conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		writeErr <- err
	}()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, io.LimitReader(att.Reader, maxOut)); err != nil && ctx.Err() == nil {
		return Result{}, fmt.Errorf("container %s: read exec output: %w", Short(container), err)
	}
	if err := <-writeErr; err != nil && ctx.Err() == nil {
		return Result{}, fmt.Errorf("container %s: write exec input: %w", Short(container), err)
	}
	if ctx.Err() != nil {
		return Result{}, fmt.Errorf("container %s: exec: %w", Short(container), ctx.Err())
	}
	code, err := exitCode(ctx, d, execID)
	if err != nil {
		return Result{}, fmt.Errorf("container %s: exec: %w", Short(container), err)
	}
	return Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: code}, nil
}

// start creates an exec of cmd in container, its standard streams
// attached, and starts it.
func start(ctx context.Context, d Docker, container string, cmd []string) (execID string, att client.HijackedResponse, err error) {
	ex, err := d.ExecCreate(ctx, container, client.ExecCreateOptions{
		Cmd:          cmd,
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return "", att, fmt.Errorf("container %s: exec: %w", Short(container), err)
	}
	a, err := d.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return "", att, fmt.Errorf("container %s: attach exec: %w", Short(container), err)
	}
	return ex.ID, a.HijackedResponse, nil
}

// exitCode waits for the exec to end (its output has, so it ends at once:
// the first waits are short) and returns its exit code.
func exitCode(ctx context.Context, d Docker, execID string) (int, error) {
	for wait := 2 * time.Millisecond; ; wait = min(2*wait, 20*time.Millisecond) {
		r, err := d.ExecInspect(ctx, execID, client.ExecInspectOptions{})
		if err != nil {
			return 0, err
		}
		if !r.Running {
			return r.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Session is a command running in a container that answers each line of
// its standard input with one line on its standard output (its standard
// error is dropped). It saves the cost of an exec per exchange. It is not
// safe for concurrent use.
type Session struct {
	att client.HijackedResponse
	out *bufio.Reader
}

// Start starts cmd in container as a Session. maxLine bounds a line of its
// output.
func Start(ctx context.Context, d Docker, container string, cmd []string, maxLine int) (*Session, error) {
	_, att, err := start(ctx, d, container, cmd)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, io.Discard, att.Reader)
		pw.CloseWithError(cmp.Or(err, io.EOF))
	}()
	return &Session{att: att, out: bufio.NewReaderSize(pr, maxLine)}, nil
}

// Exchange writes line (without a newline) and a newline to the command,
// and returns its next line of output, without the newline. After an
// error the session is unusable: Close it.
func (s *Session) Exchange(ctx context.Context, line []byte) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() { s.att.Conn.Close() })
	defer stop()
	if _, err := s.att.Conn.Write(append(line, '\n')); err != nil {
		return nil, cmp.Or(ctx.Err(), err)
	}
	out, err := s.out.ReadSlice('\n')
	if err != nil {
		return nil, cmp.Or(ctx.Err(), err)
	}
	return bytes.Clone(out[:len(out)-1]), nil
}

// Close ends the session: the command's input ends.
func (s *Session) Close() { s.att.Close() }

// Short is the 12-character form of a container ID that errors show.
func Short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
