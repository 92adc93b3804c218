package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/dso-project/dso/internal/api/events"
)

// DefaultSocketPath is the system agent's socket.
const DefaultSocketPath = "/run/dso/dso.sock"

// GroupName is the group whose members may use the agent.
const GroupName = "dso"

// LocalSocketPath is the socket of a user-scope agent (local mode):
// $XDG_RUNTIME_DIR/dso/dso.sock, else ~/.dso/run/dso.sock.
func LocalSocketPath() (string, error) {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "dso", "dso.sock"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the agent socket: %w", err)
	}
	return filepath.Join(home, ".dso", "run", "dso.sock"), nil
}

// Peer is the kernel's word on who is at the other end of a connection.
type Peer struct {
	PID int32
	UID uint32
	GID uint32
}

// Authorizer decides which peers may use the local API: root, the agent's
// own user, and members of one group (by primary group or by membership
// in the user database).
type Authorizer struct {
	AgentUID uint32
	// GroupGID is the allowed group; -1 for none.
	GroupGID int64
}

// DefaultAuthorizer allows root, the current user, and the dso group when
// it exists.
func DefaultAuthorizer() Authorizer {
	a := Authorizer{AgentUID: uint32(os.Getuid()), GroupGID: -1}
	if g, err := user.LookupGroup(GroupName); err == nil {
		if gid, err := strconv.ParseInt(g.Gid, 10, 64); err == nil {
			a.GroupGID = gid
		}
	}
	return a
}

// Allow returns nil when p may use the API, else an error saying why not.
func (a Authorizer) Allow(p Peer) error {
	if p.UID == 0 || p.UID == a.AgentUID {
		return nil
	}
	if a.GroupGID >= 0 {
		if int64(p.GID) == a.GroupGID {
			return nil
		}
		if u, err := user.LookupId(strconv.FormatUint(uint64(p.UID), 10)); err == nil {
			if gids, err := u.GroupIds(); err == nil && slices.Contains(gids, strconv.FormatInt(a.GroupGID, 10)) {
				return nil
			}
		}
	}
	return fmt.Errorf("uid %d is not allowed: only root, the agent's user and members of the %q group may use the agent", p.UID, GroupName)
}

// LocalConfig sets up the local API.
type LocalConfig struct {
	Path string // DefaultSocketPath when empty
	// Mode of the socket file (0660 when 0); its group is GroupName when
	// that group exists.
	Mode fs.FileMode
	// Authorize decides per connection (DefaultAuthorizer().Allow when nil).
	Authorize func(Peer) error

	Health  HealthSource // required
	Status  StatusSource // required
	Bus     *events.Bus  // required
	Trigger Trigger      // required
	// Register handles POST /register; nil answers 404.
	Register Registrar
	Log      *slog.Logger
}

// Local is the local API server.
type Local struct {
	cfg  LocalConfig
	srv  *http.Server
	ln   *net.UnixListener
	stop chan struct{}
}

type peerKey struct{}

// NewLocal checks cfg and returns a server; Listen then Run start it.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultSocketPath
	}
	if len(cfg.Path) >= 108 {
		return nil, fmt.Errorf("socket path %s is too long for a unix socket (%d bytes, the limit is 107)", cfg.Path, len(cfg.Path))
	}
	if cfg.Mode == 0 {
		cfg.Mode = 0o660
	}
	if cfg.Authorize == nil {
		cfg.Authorize = DefaultAuthorizer().Allow
	}
	if cfg.Health == nil || cfg.Status == nil || cfg.Bus == nil || cfg.Trigger == nil {
		return nil, errors.New("local API: health, status, event bus and trigger are all required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Local{cfg: cfg, stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("GET /health", healthHandler(cfg.Health))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := cfg.Status(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.Handle("GET /events", eventsHandler(cfg.Bus, s.stop))
	if cfg.Register != nil {
		mux.Handle("POST /register", registerHandler(cfg.Register))
	}
	mux.HandleFunc("POST /check", func(w http.ResponseWriter, r *http.Request) {
		if body, ok := readBody(w, r); ok {
			runCheck(w, body, cfg.Trigger)
		}
	})
	s.srv = &http.Server{
		Handler:           s.authorize(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       connPeer,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// connPeer records the peer's credentials, read once when it connects.
func connPeer(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var p Peer
	var credErr error
	if err := raw.Control(func(fd uintptr) { p, credErr = peerCred(int(fd)) }); err != nil || credErr != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, p)
}

func (s *Local) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey{}).(Peer)
		if !ok {
			writeError(w, http.StatusForbidden, "the caller's credentials could not be read")
			return
		}
		if err := s.cfg.Authorize(p); err != nil {
			s.cfg.Log.Warn("local API caller refused", "uid", p.UID, "gid", p.GID, "pid", p.PID)
			writeError(w, http.StatusForbidden, err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Listen creates the socket: its directory when missing (0750, group dso
// when it exists), a stale socket replaced, mode and group set.
func (s *Local) Listen() error {
	path := s.cfg.Path
	dir := filepath.Dir(path)
	gid := -1
	if g, err := user.LookupGroup(GroupName); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("socket directory %s: %w", dir, err)
		}
		if gid >= 0 {
			os.Chown(dir, -1, gid)
		}
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return fmt.Errorf("refusing to replace %s: it exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("another agent is already listening on %s", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("removing the stale socket %s: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("local API socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, s.cfg.Mode); err != nil {
		ln.Close()
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return fmt.Errorf("socket %s: giving it to group %s: %w", path, GroupName, err)
		}
	}
	s.ln = ln
	return nil
}

// Path is the socket's path.
func (s *Local) Path() string { return s.cfg.Path }

// Run serves until ctx is cancelled, then shuts down gracefully and removes
// the socket. A cancel is not an error.
func (s *Local) Run(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	return serveUntil(ctx, s.srv, func() error { return s.srv.Serve(s.ln) }, s.stop, 5*time.Second)
}
