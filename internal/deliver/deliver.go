// Package deliver hands resolved secrets to the init inside a running
// container: it runs `dso-init deliver` with `docker exec` and writes the
// payload to its stdin. The values go from this process's memory through the
// engine's exec stream into the container; nothing is written to the
// container config or to disk, and the exec's argv holds no value.
package deliver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/dso-project/dso/internal/initproc"
)

// Docker is the part of the engine client that delivery uses.
type Docker interface {
	ExecCreate(ctx context.Context, container string, opts client.ExecCreateOptions) (client.ExecCreateResult, error)
	ExecAttach(ctx context.Context, execID string, opts client.ExecAttachOptions) (client.ExecAttachResult, error)
	ExecInspect(ctx context.Context, execID string, opts client.ExecInspectOptions) (client.ExecInspectResult, error)
}

// Value is one resolved variable of a container.
type Value struct {
	Var  string
	File bool // deliver as a file on tmpfs; the variable holds its path
	Data []byte
}

// FilePath is where a file secret for variable v lives inside the container.
func FilePath(v string) string { return initproc.SecretsDir + "/" + v }

// NewPayload builds the payload for a container from its resolved values.
// signal, when not empty, is sent to the application after a rotation.
func NewPayload(values []Value, signal string) *initproc.Payload {
	p := &initproc.Payload{Env: map[string][]byte{}, Signal: signal}
	for _, v := range values {
		if v.File {
			if p.Files == nil {
				p.Files = map[string][]byte{}
			}
			p.Files[v.Var] = v.Data
			p.Env[v.Var] = []byte(FilePath(v.Var))
		} else {
			p.Env[v.Var] = v.Data
		}
	}
	return p
}

// Check applies the checks of delivery to p: names, values (no NUL in an
// env value) and size. `docker dso up` runs it before anything is created,
// so that what it accepts is what the agent can deliver.
func Check(p *initproc.Payload) error {
	data, err := encode(p)
	clear(data)
	return err
}

// encode checks p and returns its encoding, which the caller clears.
func encode(p *initproc.Payload) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if len(data) > initproc.MaxPayload {
		clear(data)
		return nil, fmt.Errorf("the secrets of one container take %d bytes encoded, over the limit of %d", len(data), initproc.MaxPayload)
	}
	return data, nil
}

// Send delivers p to the init of container and waits for its answer.
func Send(ctx context.Context, d Docker, container string, p *initproc.Payload) error {
	data, err := encode(p)
	if err != nil {
		return err
	}
	defer clear(data)

	ex, err := d.ExecCreate(ctx, container, client.ExecCreateOptions{
		Cmd:          []string{initproc.InitPath, "deliver"},
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return fmt.Errorf("container %s: start delivery: %w", short(container), err)
	}
	att, err := d.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return fmt.Errorf("container %s: attach delivery: %w", short(container), err)
	}
	defer att.Close()
	stop := context.AfterFunc(ctx, func() { att.Conn.Close() })
	defer stop()

	writeErr := make(chan error, 1)
	go func() {
		_, err := att.Conn.Write(data)
		if cw, ok := att.Conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		writeErr <- err
	}()
	var out bytes.Buffer
	defer func() { clear(out.Bytes()) }()
	if _, err := stdcopy.StdCopy(&out, &out, io.LimitReader(att.Reader, 1<<16)); err != nil && ctx.Err() == nil {
		return fmt.Errorf("container %s: read delivery answer: %w", short(container), err)
	}
	if err := <-writeErr; err != nil && ctx.Err() == nil {
		return fmt.Errorf("container %s: send payload: %w", short(container), err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("container %s: delivery: %w", short(container), ctx.Err())
	}
	code, err := exitCode(ctx, d, ex.ID)
	if err != nil {
		return fmt.Errorf("container %s: delivery: %w", short(container), err)
	}
	if code != 0 {
		msg := ReplyText(out.Bytes(), p)
		if msg == "" {
			return fmt.Errorf("container %s: delivery refused (exit code %d)", short(container), code)
		}
		return fmt.Errorf("container %s: delivery refused (exit code %d); the container answered: %s", short(container), code, msg)
	}
	return nil
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

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
