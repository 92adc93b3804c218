package initproc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultTimeout is how long the init waits for its secrets unless
// --timeout says otherwise.
const DefaultTimeout = 60 * time.Second

// ParseArgs reads the init's arguments, [--timeout D] -- COMMAND...: the
// wait for the first delivery and the application's argv. The agent reads
// a container's deadline with it.
func ParseArgs(args []string) (timeout time.Duration, argv []string, err error) {
	timeout = DefaultTimeout
	for len(args) > 0 && args[0] != "--" {
		switch {
		case args[0] == "--timeout" && len(args) > 1:
			d, err := time.ParseDuration(args[1])
			if err != nil || d <= 0 {
				return 0, nil, fmt.Errorf("bad --timeout %q", args[1])
			}
			timeout = d
			args = args[2:]
		default:
			return 0, nil, fmt.Errorf("unknown argument %q (usage: dso-init [--timeout D] -- COMMAND...)", args[0])
		}
	}
	if len(args) > 0 {
		args = args[1:]
	}
	return timeout, args, nil
}

// Exit codes of the init itself (the application's own code is passed on).
const (
	ExitNoDelivery = 124 // no secrets arrived in time
	ExitSetup      = 125 // the init could not prepare (no tmpfs, bad arguments)
	ExitNotFound   = 127 // the application's program was not found
)

// forwarded are the signals the supervisor passes on to the application.
var forwarded = []os.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGCONT, syscall.SIGTSTP,
}

// Options configure the supervisor.
type Options struct {
	Argv    []string      // the application's entrypoint and command
	Timeout time.Duration // how long to wait for the first delivery
	RunDir  string        // tmpfs directory for the socket and secret files
	Stderr  io.Writer
}

// Supervise runs the init: it waits for the first delivery, starts the
// application and supervises it. It returns the exit code for the process.
func Supervise(opts Options) int {
	logf := func(format string, a ...any) { fmt.Fprintf(opts.Stderr, "dso-init: "+format+"\n", a...) }
	if len(opts.Argv) == 0 {
		logf("no command to run: the service has no entrypoint or command")
		return ExitSetup
	}
	if err := checkTmpfs(opts.RunDir); err != nil {
		logf("%v", err)
		return ExitSetup
	}
	sock := filepath.Join(opts.RunDir, "init.sock")
	_ = os.Remove(sock)
	old := unix.Umask(0o077)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		logf("listen on %s: %v", sock, err)
		return ExitSetup
	}
	defer ln.Close()

	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)

	deliveries := make(chan delivery)
	go acceptLoop(ln, deliveries)

	s := &supervisor{opts: opts, logf: logf, dir: filepath.Join(opts.RunDir, "secrets")}
	timer := time.NewTimer(opts.Timeout)
	defer timer.Stop()

	// Before the application starts: wait for its secrets.
	for s.child == nil {
		select {
		case d := <-deliveries:
			if d.payload.Waiting != "" {
				s.waiting(d.payload.Waiting)
				d.reply(nil)
				continue
			}
			if d.payload.Refused != "" {
				logf("%s", d.payload.Refused)
				d.reply(nil)
				return ExitNoDelivery
			}
			d.reply(s.first(d.payload))
		case sig := <-sigs:
			if sig == syscall.SIGCHLD {
				reapAll()
				continue
			}
			if sig == syscall.SIGTERM || sig == syscall.SIGINT || sig == syscall.SIGQUIT {
				return 128 + int(sig.(syscall.Signal))
			}
		case <-timer.C:
			if s.why != "" {
				logf("no secrets delivered within %s: the dso agent could not get them: %s", opts.Timeout, s.why)
			} else {
				logf("no secrets delivered within %s; is the dso agent running? (`docker dso up` starts it, `docker dso status` shows it)", opts.Timeout)
			}
			return ExitNoDelivery
		}
		if s.exitCode >= 0 {
			return s.exitCode
		}
	}

	// The application runs: forward signals, reap, take rotations.
	for {
		select {
		case d := <-deliveries:
			if d.payload.Waiting != "" {
				d.reply(nil) // late news: the application runs already
				continue
			}
			if d.payload.Refused != "" {
				d.reply(errors.New("a refusal after the application started changes nothing"))
				continue
			}
			d.reply(s.rotate(d.payload))
		case sig := <-sigs:
			if sig == syscall.SIGCHLD {
				if code, done := s.reap(); done {
					return code
				}
				continue
			}
			_ = s.child.Signal(sig)
		}
	}
}

type supervisor struct {
	opts     Options
	logf     func(string, ...any)
	dir      string
	child    *os.Process
	digest   [32]byte
	exitCode int    // >= 0 when the init must end before the app started
	why      string // the agent's last word on why the secrets are late
}

// waiting logs why the secrets are late, once per distinct reason.
func (s *supervisor) waiting(why string) {
	why = strings.Join(strings.Fields(why), " ")
	if why != s.why {
		s.why = why
		s.logf("waiting for secrets: the dso agent cannot get them yet: %s", why)
	}
}

// first applies the first delivery and starts the application.
func (s *supervisor) first(p *Payload) error {
	s.exitCode = -1
	if err := writeFiles(s.dir, p.Files, p.Perms); err != nil {
		return err
	}
	path, err := exec.LookPath(s.opts.Argv[0])
	if err != nil {
		s.logf("cannot run %q: %v", s.opts.Argv[0], err)
		s.exitCode = ExitNotFound
		return fmt.Errorf("cannot run %q: not found in the container", s.opts.Argv[0])
	}
	env := mergeEnv(os.Environ(), p.Env)
	proc, err := os.StartProcess(path, s.opts.Argv, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		s.logf("cannot start %q: %v", s.opts.Argv[0], err)
		s.exitCode = ExitSetup
		return fmt.Errorf("cannot start %q", s.opts.Argv[0])
	}
	s.child = proc
	s.digest = p.Digest()
	return nil
}

// rotate applies a later delivery: files are rewritten atomically, then the
// application gets the signal the payload names. Env changes cannot reach a
// running process; the agent restarts the container for those.
func (s *supervisor) rotate(p *Payload) error {
	d := p.Digest()
	if d == s.digest {
		return nil
	}
	if err := writeFiles(s.dir, p.Files, p.Perms); err != nil {
		return err
	}
	s.digest = d
	if p.Signal != "" {
		sig, _ := ParseSignal(p.Signal)
		if err := s.child.Signal(sig); err != nil {
			return fmt.Errorf("signal %s to the application: %v", p.Signal, err)
		}
	}
	return nil
}

// reap collects every exited child; done is true when the application ended.
func (s *supervisor) reap() (code int, done bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return 0, false
		}
		if pid == s.child.Pid {
			if ws.Signaled() {
				return 128 + int(ws.Signal()), true
			}
			return ws.ExitStatus(), true
		}
	}
}

func reapAll() {
	for {
		var ws syscall.WaitStatus
		if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
			return
		}
	}
}

// writeFiles makes dir hold exactly files: each written to a temporary name,
// given its owner and mode (perms, else DefaultPerm), and renamed over the
// old one, so readers see the old or the new content. The directory is
// closed to others (0700) unless a file has an owner or mode of its own:
// then others may pass through it (0711), not list it.
func writeFiles(dir string, files map[string][]byte, perms map[string]FilePerm) error {
	if len(files) == 0 {
		return nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %v", dir, err)
	}
	dirMode := os.FileMode(0o700)
	if len(perms) > 0 {
		dirMode = 0o711
	}
	if err := os.Chmod(dir, dirMode); err != nil {
		return fmt.Errorf("chmod %s: %v", dir, err)
	}
	for name, data := range files {
		perm, ok := perms[name]
		if !ok {
			perm = DefaultPerm
		}
		tmp, err := os.CreateTemp(dir, ".tmp-"+name+"-")
		if err != nil {
			return fmt.Errorf("write %s: %v", name, err)
		}
		_, werr := tmp.Write(data)
		var oerr error
		if perm.UID != -1 || perm.GID != -1 {
			if err := tmp.Chown(perm.UID, perm.GID); err != nil {
				oerr = fmt.Errorf("give it to %s: %v (only a container running as root can give a file to another user or group)", owner(perm), errors.Unwrap(err))
			}
		}
		cerr := tmp.Chmod(os.FileMode(perm.Mode))
		if err := errors.Join(werr, oerr, cerr, tmp.Close()); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("write %s: %v", name, err)
		}
		if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("write %s: %v", name, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, keep := files[e.Name()]; !keep && !strings.HasPrefix(e.Name(), ".tmp-") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// owner shows a file's owner as uid:gid, "-" for the init's own.
func owner(p FilePerm) string {
	id := func(n int) string {
		if n < 0 {
			return "-"
		}
		return fmt.Sprint(n)
	}
	return id(p.UID) + ":" + id(p.GID)
}

// mergeEnv returns base with the variables of add set (replacing any there).
func mergeEnv(base []string, add map[string][]byte) []string {
	out := make([]string, 0, len(base)+len(add))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if _, replaced := add[name]; !replaced {
			out = append(out, kv)
		}
	}
	for k, v := range add {
		out = append(out, k+"="+string(v))
	}
	return out
}

// delivery is one connection on the init socket with its decoded payload.
type delivery struct {
	conn    *net.UnixConn
	payload *Payload
}

func (d delivery) reply(err error) {
	if err != nil {
		fmt.Fprintf(d.conn, "error: %s\n", err)
	} else {
		fmt.Fprintln(d.conn, "ok")
	}
	d.conn.Close()
}

// acceptLoop reads deliveries; malformed ones are answered here.
func acceptLoop(ln *net.UnixListener, out chan<- delivery) {
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		p, err := ReadPayload(conn)
		if err != nil {
			delivery{conn: conn}.reply(err)
			continue
		}
		conn.SetReadDeadline(time.Time{})
		out <- delivery{conn: conn, payload: p}
	}
}

// Deliver sends the payload read from in to the init listening on socket,
// retrying the connection until wait has passed (the init may still be
// starting). It returns the init's answer as an error, or nil.
func Deliver(in io.Reader, socket string, wait time.Duration) error {
	data, err := io.ReadAll(io.LimitReader(in, MaxPayload+1))
	if err != nil {
		return fmt.Errorf("read payload: %v", err)
	}
	if len(data) > MaxPayload {
		return fmt.Errorf("payload larger than %d bytes", MaxPayload)
	}
	deadline := time.Now().Add(wait)
	var conn *net.UnixConn
	for {
		conn, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the init is not listening on %s: %v", socket, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer conn.Close()
	line, err := Exchange(conn, data)
	if err != nil {
		return err
	}
	if string(line) == "ok" {
		return nil
	}
	return errors.New(strings.TrimPrefix(string(line), "error: "))
}

// Exchange sends an encoded payload on a connection to the init's socket
// and returns its answer line, trimmed: "ok", or "error: " and why. The
// answer comes from inside the container: the caller clears it.
func Exchange(conn *net.UnixConn, data []byte) ([]byte, error) {
	if _, err := conn.Write(data); err != nil {
		return nil, fmt.Errorf("send payload: %v", err)
	}
	conn.CloseWrite()
	line := make([]byte, 4096)
	n := 0
	for {
		m, err := conn.Read(line[n:])
		n += m
		if end := bytes.IndexByte(line[:n], '\n'); end >= 0 {
			clear(line[end:])
			return bytes.TrimSpace(line[:end]), nil
		}
		if err == nil && n == len(line) {
			err = errors.New("answer longer than a line of 4096 bytes")
		}
		if err != nil {
			clear(line)
			return nil, fmt.Errorf("no answer from the init: %v", err)
		}
	}
}
