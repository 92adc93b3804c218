// Package driver is DSO's Docker Swarm secret driver, named "dso": a legacy
// Docker plugin (HTTP over a unix socket in /run/docker/plugins) that the
// Swarm manager asks for a secret's value when a task that uses the secret
// lands on a node lacking it. The secret object holds no value, only labels
// naming it: dso.ref, a dso:// reference, which the driver resolves through
// the providers of the agent's dso.yaml; dso.version, the provider version
// it was made for; dso.stack, the stack it belongs to.
//
// The protocol: POST /Plugin.Activate answers {"Implements":
// ["secretprovider"]}; POST /SecretProvider.GetSecret takes the secret's
// name and labels and the service, task and node that want it, and answers
// {"Value": <bytes>, "DoNotReuse": false} or {"Err": "..."}. A value is
// never logged, never in an error; the log names the secret, the service,
// the task and the node.
//
// Trust: the socket is root's alone (0600), and whoever can create a Swarm
// secret or service can already run anything as root on the nodes, so the
// labels are not a security boundary. The driver refuses what DSO never
// makes: a secret without the three labels, a reference that is not a
// project-qualified dso:// reference, and a request from a service outside
// the secret's stack (its com.docker.stack.namespace label), so that a
// stack's secrets go to that stack's services only, as a compose project's
// do.
package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dso-project/dso/internal/metrics"
	"github.com/dso-project/dso/internal/secretref"
)

// Name is the driver's name: `docker secret create --driver dso`.
const Name = "dso"

// DefaultSocket is where dockerd looks for a legacy plugin named Name.
const DefaultSocket = "/run/docker/plugins/" + Name + ".sock"

// The labels of a DSO Swarm secret.
const (
	// LabelRef is the canonical dso:// reference of the secret
	// (secretref.Ref.String(), project-qualified path, no uid, gid or
	// mode): the same for a dso:// and a dsofile:// use.
	LabelRef = "dso.ref"
	// LabelVersion is the provider version the secret object was made for.
	LabelVersion = "dso.version"
	// LabelStack is the stack the secret belongs to.
	LabelStack = "dso.stack"
)

// labelNamespace is the label Swarm stacks put on their services.
const labelNamespace = "com.docker.stack.namespace"

// contentType is the media type of the plugin protocol's bodies.
const contentType = "application/vnd.docker.plugins.v1.2+json"

// Resolver returns the value of a dso:// reference from the agent's
// providers. Its errors name the reference and the cause, never a value.
type Resolver func(ctx context.Context, ref secretref.Ref) ([]byte, error)

// Request is the body of POST /SecretProvider.GetSecret, as the engine
// sends it (swarmkit's SecretsProviderRequest).
type Request struct {
	SecretName    string            `json:",omitempty"`
	SecretLabels  map[string]string `json:",omitempty"`
	ServiceID     string            `json:",omitempty"`
	ServiceName   string            `json:",omitempty"`
	ServiceLabels map[string]string `json:",omitempty"`
	TaskID        string            `json:",omitempty"`
	TaskName      string            `json:",omitempty"`
	TaskImage     string            `json:",omitempty"`
	NodeID        string            `json:",omitempty"`
}

// Response is the answer to GetSecret: Value (base64 in JSON), or Err.
// DoNotReuse false lets a node that holds the secret start new tasks with it
// while the driver is down.
type Response struct {
	Value      []byte `json:",omitempty"`
	Err        string `json:",omitempty"`
	DoNotReuse bool
}

// Driver serves the plugin protocol.
type Driver struct {
	resolve Resolver
	log     *slog.Logger
	metrics *metrics.Metrics
}

// New returns a driver answering from resolve. log and m may be nil.
func New(resolve Resolver, log *slog.Logger, m *metrics.Metrics) *Driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{resolve: resolve, log: log, metrics: m}
}

// Handler is the plugin protocol's HTTP handler.
func (d *Driver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Plugin.Activate", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, map[string][]string{"Implements": {"secretprovider"}})
	})
	mux.HandleFunc("POST /SecretProvider.GetSecret", d.getSecret)
	return mux
}

// maxRequest bounds a GetSecret body (names, labels and IDs only).
const maxRequest = 1 << 20

func (d *Driver) getSecret(w http.ResponseWriter, r *http.Request) {
	var req Request
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequest)).Decode(&req); err != nil {
		d.count(false)
		d.log.Warn("swarm secret driver: unreadable GetSecret request", "error", err)
		reply(w, http.StatusBadRequest, Response{Err: "dso secret driver: unreadable request: " + err.Error()})
		return
	}
	value, err := d.get(r.Context(), req)
	d.count(err == nil)
	if err != nil {
		d.log.Warn("swarm secret driver: secret refused", "secret", req.SecretName, "service", req.ServiceName, "task", req.TaskName, "node", req.NodeID, "error", err)
		reply(w, http.StatusInternalServerError, Response{Err: fmt.Sprintf("dso secret driver: secret %q for task %s: %v", req.SecretName, req.TaskName, err)})
		return
	}
	d.log.Info("swarm secret driver: secret served", "secret", req.SecretName, "ref", req.SecretLabels[LabelRef],
		"version", req.SecretLabels[LabelVersion], "service", req.ServiceName, "task", req.TaskName, "node", req.NodeID)
	reply(w, http.StatusOK, Response{Value: value})
}

// get checks the request against the secret's labels and resolves it.
func (d *Driver) get(ctx context.Context, req Request) ([]byte, error) {
	ref, err := Ref(req.SecretLabels)
	if err != nil {
		return nil, err
	}
	stack := req.SecretLabels[LabelStack]
	if ns := req.ServiceLabels[labelNamespace]; ns != stack {
		return nil, fmt.Errorf("the secret belongs to stack %q and service %q is not in it (its %s label is %q): DSO serves a stack's secrets to that stack's services only", stack, req.ServiceName, labelNamespace, ns)
	}
	return d.resolve(ctx, ref)
}

// Ref returns the reference that the labels of a DSO Swarm secret name,
// checking that they are all there and that dso.ref is a canonical,
// project-qualified dso:// reference.
func Ref(labels map[string]string) (secretref.Ref, error) {
	for _, l := range []string{LabelRef, LabelVersion, LabelStack} {
		if labels[l] == "" {
			return secretref.Ref{}, fmt.Errorf("no %s label: not a secret made by `docker dso stack deploy`", l)
		}
	}
	s := labels[LabelRef]
	ref, err := secretref.Parse(s)
	if err != nil {
		return secretref.Ref{}, fmt.Errorf("label %s: %w", LabelRef, err)
	}
	switch {
	case ref.File || !ref.Perm.IsZero():
		return secretref.Ref{}, fmt.Errorf("label %s=%q: want a dso:// reference (how the value is used, env or file, is the service's)", LabelRef, s)
	case !strings.Contains(ref.Path, "/"):
		return secretref.Ref{}, fmt.Errorf("label %s=%q: the path is not inside a project (want dso://PROJECT/NAME)", LabelRef, s)
	case ref.String() != s:
		return secretref.Ref{}, fmt.Errorf("label %s=%q: not in canonical form (%q)", LabelRef, s, ref.String())
	}
	return ref, nil
}

func (d *Driver) count(ok bool) {
	if d.metrics != nil {
		d.metrics.ObserveSwarmSecret(ok)
	}
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// Run serves the protocol on a unix socket at path (mode 0600) until ctx
// ends, then removes the socket. The socket replaces whatever socket is at
// path (one left by a driver that died), and appears there whole: made in a
// private directory beside it, then renamed into place.
func (d *Driver) Run(ctx context.Context, path string) error {
	l, err := listen(path)
	if err != nil {
		return fmt.Errorf("swarm secret driver socket %s: %w", path, err)
	}
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	shutdown := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(shutdown)
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	d.log.Info("swarm secret driver serving", "socket", path)
	err = srv.Serve(l)
	if stop() {
		_ = srv.Close() // it failed on its own
	} else {
		<-shutdown // requests in flight are answered
	}
	_ = os.Remove(path)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("%s exists and is not a socket", path)
	}
	tmp, err := os.MkdirTemp(dir, ".dso-driver-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	sock := filepath.Join(tmp, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(sock, 0o600); err != nil {
		_ = l.Close()
		return nil, err
	}
	if err := os.Rename(sock, path); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}
