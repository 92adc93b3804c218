// Package initproc is the small init that DSO puts in front of a service's
// entrypoint. It runs as PID 1 inside the container, waits (bounded in time)
// for its secrets to be handed over on a unix socket in the container's
// tmpfs, writes the file secrets there, then starts the application with the
// env secrets added to its environment and stays as a minimal supervisor:
// it forwards signals, reaps zombies, and accepts later deliveries (rotation)
// that rewrite the files atomically and signal the application.
//
// The hand-over comes from `dso-init deliver`, which the agent runs in the
// container with `docker exec`, the payload on stdin: the values travel only
// through process memory and pipes, never the container config or the disk.
package initproc

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// Paths inside the container. The compose wiring mounts the init binary at
// InitPath and a tmpfs at RunDir.
const (
	InitPath   = "/.dso/init"
	RunDir     = "/run/dso"
	SocketPath = RunDir + "/init.sock"
	SecretsDir = RunDir + "/secrets"
)

// MaxPayload bounds what a delivery may carry.
const MaxPayload = 64 << 20

// Payload is what one delivery hands to the init.
type Payload struct {
	// Env are variables to add to the application's environment.
	Env map[string][]byte `json:"env,omitempty"`
	// Files are written under SecretsDir, named by the key.
	Files map[string][]byte `json:"files,omitempty"`
	// Perms are the owner and mode of the files that do not keep the
	// defaults (the init's own user and group, mode 0400), by file name.
	Perms map[string]FilePerm `json:"perms,omitempty"`
	// Signal, on a delivery to a running application, is sent to it after
	// the files are rewritten ("" sends nothing). Names like "SIGHUP".
	Signal string `json:"signal,omitempty"`
	// Waiting, in a message that carries nothing else, is the agent's word
	// on why the secrets are late (which provider, what failed: never a
	// value). The init logs it and keeps waiting.
	Waiting string `json:"waiting,omitempty"`
	// Refused, instead of secrets, says why the agent will not serve this
	// container: the init logs it and ends with ExitNoDelivery.
	Refused string `json:"refused,omitempty"`
}

// FilePerm is the owner and mode of one file. A UID or GID of -1 keeps the
// init's own, as with chown(2).
type FilePerm struct {
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	Mode uint32 `json:"mode"`
}

// DefaultPerm is the owner and mode of a file that sets none.
var DefaultPerm = FilePerm{UID: -1, GID: -1, Mode: 0o400}

// maxID is the largest uid or gid a file may be given.
const maxID = 1<<31 - 1

// MaxWaiting bounds the length of a Waiting message.
const MaxWaiting = 2048

// maxRefused bounds the reason of a refusal.
const maxRefused = 512

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
var fileName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// Validate checks names and values, and reports every problem, sorted;
// errors name the variable or file, never a value.
func (p *Payload) Validate() error {
	var errs []string
	if p.Waiting != "" && (len(p.Env) > 0 || len(p.Files) > 0 || p.Signal != "") {
		errs = append(errs, "a waiting message carries no secrets")
	}
	if len(p.Waiting) > MaxWaiting {
		errs = append(errs, fmt.Sprintf("waiting message longer than %d bytes", MaxWaiting))
	}
	for k, v := range p.Env {
		if !envName.MatchString(k) {
			errs = append(errs, fmt.Sprintf("env name %q is not a valid variable name (letters, digits and '_', not starting with a digit)", k))
			continue
		}
		if slices.Contains(v, 0) {
			errs = append(errs, fmt.Sprintf("env %s: the value has a NUL byte, which an environment cannot hold (deliver it as a file with dsofile://)", k))
		}
	}
	for k := range p.Files {
		if !fileName.MatchString(k) {
			errs = append(errs, fmt.Sprintf("file name %q must be letters, digits, '.', '-' or '_'", k))
		}
	}
	for k, perm := range p.Perms {
		if _, ok := p.Files[k]; !ok {
			errs = append(errs, fmt.Sprintf("owner and mode for %q, which is not a delivered file", k))
		}
		if perm.UID < -1 || perm.UID > maxID || perm.GID < -1 || perm.GID > maxID {
			errs = append(errs, fmt.Sprintf("file %s: owner %d:%d is not a pair of ids from 0 to %d", k, perm.UID, perm.GID, maxID))
		}
		if perm.Mode > 0o777 {
			errs = append(errs, fmt.Sprintf("file %s: mode %#o has bits beyond 0777", k, perm.Mode))
		}
	}
	if p.Signal != "" {
		if _, err := ParseSignal(p.Signal); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if p.Refused != "" {
		if len(p.Env) > 0 || len(p.Files) > 0 || p.Signal != "" || p.Waiting != "" {
			errs = append(errs, "a refusal carries no secrets and no signal")
		}
		if len(p.Refused) > maxRefused || strings.IndexFunc(p.Refused, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
			errs = append(errs, fmt.Sprintf("a refusal's reason must be at most %d bytes of printable ASCII", maxRefused))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	sort.Strings(errs)
	return errors.New(strings.Join(errs, "\n"))
}

// Digest identifies the content of the payload (env and files), so that a
// repeated delivery of the same secrets changes nothing.
func (p *Payload) Digest() [32]byte {
	h := sha256.New()
	write := func(kind string, m map[string][]byte) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(h, "%s %d:%s %d:", kind, len(k), k, len(m[k]))
			h.Write(m[k])
		}
	}
	write("env", p.Env)
	write("file", p.Files)
	names := make([]string, 0, len(p.Perms))
	for k := range p.Perms {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(h, "perm %d:%s %d %d %o;", len(k), k, p.Perms[k].UID, p.Perms[k].GID, p.Perms[k].Mode)
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// ReadPayload decodes one payload from r, bounded by MaxPayload.
func ReadPayload(r io.Reader) (*Payload, error) {
	var p Payload
	dec := json.NewDecoder(io.LimitReader(r, MaxPayload+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("malformed delivery payload")
		}
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty delivery payload")
		}
		return nil, errors.New("malformed delivery payload: unexpected content")
	}
	return &p, p.Validate()
}

var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGTERM": syscall.SIGTERM, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
	"SIGWINCH": syscall.SIGWINCH, "SIGKILL": syscall.SIGKILL,
}

// ParseSignal reads a signal name ("SIGHUP" or "HUP").
func ParseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if s, ok := signals[n]; ok {
		return s, nil
	}
	return 0, fmt.Errorf("unknown signal %q (known: SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH)", name)
}
