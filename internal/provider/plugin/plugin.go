// Package plugin runs external secret providers: separate programs named
// dso-provider-<type>, spoken to over gRPC with hashicorp/go-plugin.
//
// Protocol: proto/provider.proto (gRPC service dso.provider.v1.Provider:
// Configure, Get, Version; classes as gRPC status codes), with go-plugin's
// handshake (protocol version 1, magic cookie DSO_PROVIDER_PLUGIN). A Go
// plugin is a main that calls Serve; cmd/dso-provider-example is one.
// gRPC rather than go-plugin's net/rpc because it is go-plugin's
// recommended protocol and lets plugins be written in any language.
//
// Discovery: the binary named by Options.Path, else dso-provider-<type> in
// the first of Options.Dirs (default ~/.dso/plugins, then
// /usr/local/lib/dso/plugins) that has it.
//
// Integrity: before each start the binary's SHA-256 must equal the one
// pinned in dso.yaml (Options.SHA256) or, when none is pinned, its line in
// the SHA256SUMS file beside it (sha256sum's format). A mismatch, or a
// binary with no checksum anywhere, is refused with an error that names
// the file and shows its actual checksum. go-plugin checks it again as it
// executes the file.
//
// The plugin starts on first use, gets its options through Configure,
// inherits dso's environment, and is started again if it dies. Close
// kills it.
package plugin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dso-project/dso/internal/provider"
	pb "github.com/dso-project/dso/internal/provider/plugin/proto"
	"github.com/dso-project/dso/internal/provider/retry"
)

// startTimeout bounds starting and configuring a plugin.
const startTimeout = 30 * time.Second

// ChecksumsFile is the name of the checksums file in a plugin directory.
const ChecksumsFile = "SHA256SUMS"

// Options configure an external provider.
type Options struct {
	Name    string            // provider name in dso.yaml and errors
	Type    string            // the plugin is dso-provider-<Type>
	Path    string            // the binary; found in Dirs if empty
	Dirs    []string          // where to look; DefaultDirs() if nil
	SHA256  string            // pinned checksum (hex); SHA256SUMS if empty
	Options map[string]string // passed to the plugin's Configure
	Retry   retry.Policy
}

// DefaultDirs returns ~/.dso/plugins and /usr/local/lib/dso/plugins.
func DefaultDirs() []string {
	var dirs []string
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".dso", "plugins"))
	}
	return append(dirs, "/usr/local/lib/dso/plugins")
}

// Provider is an external provider plugin.
type Provider struct {
	name, path, sum string
	options         map[string]string
	retry           retry.Policy

	mu     sync.Mutex
	client *goplugin.Client
	rpc    pb.ProviderClient
	closed bool
}

// New finds the plugin binary and checks its checksum. It does not start it.
func New(opts Options) (*Provider, error) {
	name := opts.Name
	if name == "" {
		name = opts.Type
	}
	bad := func(format string, a ...any) (*Provider, error) {
		return nil, fmt.Errorf("provider %q: %s", name, fmt.Sprintf(format, a...))
	}
	if err := opts.Retry.Validate(); err != nil {
		return bad("%v", err)
	}
	path := opts.Path
	if path == "" {
		if opts.Type == "" || strings.ContainsAny(opts.Type, `/\`) || strings.HasPrefix(opts.Type, ".") {
			return bad("plugin type %q: want a name like \"gcp\" (binary dso-provider-gcp)", opts.Type)
		}
		dirs := opts.Dirs
		if dirs == nil {
			dirs = DefaultDirs()
		}
		var err error
		if path, err = find("dso-provider-"+opts.Type, dirs); err != nil {
			return bad("%v", err)
		}
	}
	want := strings.ToLower(strings.TrimSpace(opts.SHA256))
	if want == "" {
		var err error
		if want, err = listedSum(path); err != nil {
			return bad("%v", err)
		}
	}
	if err := verify(path, want); err != nil {
		return bad("%v", err)
	}
	return &Provider{name: name, path: path, sum: want, options: opts.Options, retry: opts.Retry.WithDefaults()}, nil
}

// find returns the first dir/file that is an executable regular file.
func find(file string, dirs []string) (string, error) {
	for _, dir := range dirs {
		p := filepath.Join(dir, file)
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("no executable %s in %s", file, strings.Join(dirs, ", "))
}

// listedSum returns the checksum of path listed in SHA256SUMS beside it.
func listedSum(path string) (string, error) {
	sums := filepath.Join(filepath.Dir(path), ChecksumsFile)
	f, err := os.Open(sums)
	if err != nil {
		actual, _ := fileSum(path)
		return "", fmt.Errorf("plugin %s has no pinned checksum and %s cannot be read (%v); pin it with sha256: %s after checking the file",
			path, sums, errors.Unwrap(err), actual)
	}
	defer f.Close()
	base := filepath.Base(path)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && strings.TrimPrefix(fields[1], "*") == base {
			return strings.ToLower(fields[0]), nil
		}
	}
	actual, _ := fileSum(path)
	return "", fmt.Errorf("plugin %s is not listed in %s; add \"%s  %s\" after checking the file, or pin sha256 in dso.yaml", path, sums, actual, base)
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func verify(path, want string) error {
	if len(want) != 64 {
		return fmt.Errorf("checksum %q for %s: want 64 hex digits of SHA-256", want, path)
	}
	if _, err := hex.DecodeString(want); err != nil {
		return fmt.Errorf("checksum %q for %s: want 64 hex digits of SHA-256", want, path)
	}
	got, err := fileSum(path)
	if err != nil {
		return fmt.Errorf("plugin %s: %w", path, err)
	}
	if got != want {
		return fmt.Errorf("plugin %s fails its integrity check: SHA-256 is %s, expected %s; refusing to run it", path, got, want)
	}
	return nil
}

// Get returns the plugin's answer for path.
func (p *Provider) Get(ctx context.Context, path string) (provider.Secret, error) {
	var out provider.Secret
	err := p.call(ctx, path, func(ctx context.Context, c pb.ProviderClient) error {
		r, err := c.Get(ctx, &pb.GetRequest{Path: path})
		if err == nil {
			out = provider.Secret{Value: r.GetValue(), Version: r.GetVersion()}
		}
		return err
	})
	return out, err
}

// Version returns the plugin's version for path.
func (p *Provider) Version(ctx context.Context, path string) (string, error) {
	var out string
	err := p.call(ctx, path, func(ctx context.Context, c pb.ProviderClient) error {
		r, err := c.Version(ctx, &pb.VersionRequest{Path: path})
		if err == nil {
			out = r.GetVersion()
		}
		return err
	})
	return out, err
}

// call runs fn under the retry policy, starting the plugin as needed, and
// classifies its failure.
func (p *Provider) call(ctx context.Context, path string, fn func(context.Context, pb.ProviderClient) error) error {
	return p.retry.Do(ctx, func(ctx context.Context) error {
		c, err := p.start(ctx)
		if err != nil {
			return &provider.Error{Provider: p.name, Path: path, Err: err}
		}
		err = fn(ctx, c)
		if err == nil {
			return nil
		}
		kind, detail := fromStatus(err)
		if kind == nil {
			kind = retry.Transport(err)
		}
		if timedOut(ctx, err) {
			kind, detail = provider.ErrUnreachable, retry.TimeoutDetail(context.DeadlineExceeded, p.retry.Timeout)
		}
		return &provider.Error{Provider: p.name, Path: path, Kind: kind, Err: detail}
	})
}

// timedOut reports a call that ended because its time was up. The plugin
// may end the stream a moment before the caller's own deadline passes.
func timedOut(ctx context.Context, err error) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	code := status.Code(err)
	d, ok := ctx.Deadline()
	return ok && (code == codes.DeadlineExceeded || code == codes.Canceled || code == codes.Unavailable) && time.Until(d) < 50*time.Millisecond
}

// start returns a client of the running plugin, starting (or restarting)
// and configuring it if needed.
func (p *Provider) start(ctx context.Context) (pb.ProviderClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("provider is closed")
	}
	if p.client != nil && !p.client.Exited() {
		return p.rpc, nil
	}
	if p.client != nil {
		p.client.Kill()
		p.client = nil
	}
	if err := verify(p.path, p.sum); err != nil {
		return nil, err
	}
	sum, _ := hex.DecodeString(p.sum)
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  Handshake,
		StartTimeout:     startTimeout,
		Plugins:          goplugin.PluginSet{pluginName: &grpcPlugin{}},
		Cmd:              exec.Command(p.path),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		SecureConfig:     &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()},
		Logger:           hclog.NewNullLogger(),
	})
	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("starting plugin %s: %w", p.path, err)
	}
	raw, err := rpcClient.Dispense(pluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugin %s: %w", p.path, err)
	}
	c := raw.(pb.ProviderClient)
	// Starting is not part of the call's own time limit.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startTimeout)
	defer cancel()
	if _, err := c.Configure(cctx, &pb.ConfigureRequest{Name: p.name, Options: p.options}); err != nil {
		client.Kill()
		_, detail := fromStatus(err)
		return nil, fmt.Errorf("plugin %s refused its options: %w", p.path, detail)
	}
	p.client, p.rpc = client, c
	return c, nil
}

// Close kills the plugin process, if it runs.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.client != nil {
		p.client.Kill()
		p.client = nil
	}
	return nil
}
