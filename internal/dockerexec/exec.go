// Package dockerexec runs a command in a running container with `docker
// exec`, writes its standard input from memory and collects its output and
// exit code. It is how the agent talks to the DSO binaries inside
// containers (the init's delivery, the proxy's control): the data goes
// through the engine's exec stream only, never through argv or the disk.
package dockerexec

import (
	"bytes"
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
	ex, err := d.ExecCreate(ctx, container, client.ExecCreateOptions{
		Cmd:          cmd,
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return Result{}, fmt.Errorf("container %s: exec: %w", Short(container), err)
	}
	att, err := d.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return Result{}, fmt.Errorf("container %s: attach exec: %w", Short(container), err)
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
	code, err := exitCode(ctx, d, ex.ID)
	if err != nil {
		return Result{}, fmt.Errorf("container %s: exec: %w", Short(container), err)
	}
	return Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: code}, nil
}

func exitCode(ctx context.Context, d Docker, execID string) (int, error) {
	for {
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
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Short is the 12-character form of a container ID that errors show.
func Short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
