// Package deliver hands resolved secrets to the init inside a running
// container, on the init's unix socket in the container's tmpfs: straight
// from the host when this process may reach it there (root, the engine on
// this host: direct.go, package containersock), else with `docker exec dso-init deliver`,
// the payload written to its stdin. The values go from this process's
// memory through a socket or the engine's exec stream into the container;
// nothing is written to the container config or to disk, and no argv holds
// a value.
package deliver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/dso-project/dso/internal/dockerexec"
	"github.com/dso-project/dso/internal/initproc"
	"github.com/dso-project/dso/internal/secretref"
)

// Docker is the part of the engine client that delivery uses.
type Docker = dockerexec.Docker

// Value is one resolved variable of a container.
type Value struct {
	Var  string
	File bool           // deliver as a file on tmpfs; the variable holds its path
	Perm secretref.Perm // the file's owner and mode, when not the defaults
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
			if !v.Perm.IsZero() {
				if p.Perms == nil {
					p.Perms = map[string]initproc.FilePerm{}
				}
				p.Perms[v.Var] = filePerm(v.Perm)
			}
		} else {
			p.Env[v.Var] = v.Data
		}
	}
	return p
}

// filePerm turns the owner and mode a reference asks for into the init's
// terms: the parts not set keep the init's own user and group, and 0400.
func filePerm(p secretref.Perm) initproc.FilePerm {
	fp := initproc.DefaultPerm
	if p.HasUID {
		fp.UID = int(p.UID)
	}
	if p.HasGID {
		fp.GID = int(p.GID)
	}
	if p.HasMode {
		fp.Mode = p.Mode
	}
	return fp
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

// socketWait bounds the wait for the init's socket (it may have just
// started), as `dso-init deliver` does; sendTimeout the whole delivery.
const (
	socketWait  = 10 * time.Second
	sendTimeout = 30 * time.Second
)

// Send delivers p to the init of c, a container as inspected just before,
// and waits for its answer.
func Send(ctx context.Context, d Docker, c container.InspectResponse, p *initproc.Payload) error {
	id := c.ID
	// Neither way waits for an answer longer than this.
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	data, err := encode(p)
	if err != nil {
		return err
	}
	defer clear(data)

	if answer, handled, err := direct(ctx, c, data, socketWait); handled {
		if err != nil {
			return fmt.Errorf("container %s: delivery: %w", dockerexec.Short(id), err)
		}
		// The answer comes from the workload: it may echo what it got.
		defer clear(answer)
		if string(answer) == "ok" {
			return nil
		}
		return refused(id, "", bytes.TrimPrefix(answer, []byte("error: ")), p)
	}
	return sendExec(ctx, d, id, p, data)
}

// sendExec delivers data, the encoding of p, with `docker exec dso-init
// deliver`, which hands it to the init's socket inside the container.
func sendExec(ctx context.Context, d Docker, container string, p *initproc.Payload, data []byte) error {
	res, err := dockerexec.Run(ctx, d, container, []string{initproc.InitPath, "deliver"}, data, 1<<16)
	if err != nil {
		return fmt.Errorf("delivery: %w", err)
	}
	// The answer comes from the workload: it may echo what it got.
	defer clear(res.Stdout)
	defer clear(res.Stderr)
	if res.ExitCode != 0 {
		out := slices.Concat(res.Stdout, res.Stderr)
		defer clear(out)
		return refused(container, fmt.Sprintf(" (exit code %d)", res.ExitCode), out, p)
	}
	return nil
}

// refused is the error of a delivery the container's init refused, with
// its answer cut by ReplyText (it may echo the values of p); how says more
// of the refusal ("" or " (exit code N)").
func refused(container, how string, answer []byte, p *initproc.Payload) error {
	msg := ReplyText(answer, p)
	if msg == "" {
		return fmt.Errorf("container %s: delivery refused%s", dockerexec.Short(container), how)
	}
	return fmt.Errorf("container %s: delivery refused%s; the container answered: %s", dockerexec.Short(container), how, msg)
}

// Tell sends the init of c, still waiting for its first delivery, why its
// secrets are late; the init logs it. why names providers and failures,
// never a value.
func Tell(ctx context.Context, d Docker, c container.InspectResponse, why string) error {
	if len(why) > initproc.MaxWaiting {
		why = why[:initproc.MaxWaiting-3] + "..."
	}
	return Send(ctx, d, c, &initproc.Payload{Waiting: why})
}
