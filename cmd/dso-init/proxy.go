package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/dso-project/dso/internal/proxy"
)

// portsFlag collects --port LISTEN[:TARGET] values.
type portsFlag []proxy.Port

func (f *portsFlag) String() string { return fmt.Sprint(*f) }

func (f *portsFlag) Set(v string) error {
	l, t, found := strings.Cut(v, ":")
	listen, err := strconv.Atoi(l)
	target := listen
	if err == nil && found {
		target, err = strconv.Atoi(t)
	}
	if err != nil || listen < 1 || listen > 65535 || target < 1 || target > 65535 {
		return fmt.Errorf("%q is not LISTEN[:TARGET] with ports within 1-65535", v)
	}
	*f = append(*f, proxy.Port{Listen: listen, Target: target})
	return nil
}

// runProxy is `dso-init proxy`: the proxy container's PID 1. SIGTERM and
// SIGINT stop it gracefully (exit 0).
//
// The proxy asks Go for one processor more than the CPUs it may use
// (GOMAXPROCS, unless the environment sets it): its event loops, one per
// CPU, each keep a processor between the messages of busy traffic, and
// the one left over runs the goroutines that accept, dial and take the
// agent's orders (internal/proxy/pump_linux.go). With one loop on one CPU the
// machine's other CPU idled behind it under many small requests.
func runProxy(args []string) int {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	}
	fs := flag.NewFlagSet("dso-init proxy", flag.ContinueOnError)
	var ports portsFlag
	opts := proxy.Options{Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	fs.Var(&ports, "port", "`LISTEN[:TARGET]` port to forward (repeat for more)")
	fs.StringVar(&opts.Backend, "backend", "", "`HOST` new connections go to until the agent sets others (the compose service name)")
	fs.DurationVar(&opts.HoldTimeout, "hold-timeout", proxy.DefaultHoldTimeout, "longest wait of connections held during a swap")
	scheduling := fs.String("scheduling", "auto", "`POLICY` of the threads that move the bytes: auto, normal or batch (see proxy.Scheduling)")
	control := fs.String("control", proxy.ControlPath, "`PATH` of the control socket")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if opts.Scheduling, err = proxy.ParseScheduling(*scheduling); err != nil {
		fmt.Fprintf(os.Stderr, "dso-init proxy: --scheduling %v\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "dso-init proxy: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if len(ports) == 0 || opts.Backend == "" {
		fmt.Fprintln(os.Stderr, "dso-init proxy: --port and --backend are required")
		return 2
	}
	if opts.HoldTimeout <= 0 || opts.HoldTimeout > proxy.MaxTimeout {
		fmt.Fprintf(os.Stderr, "dso-init proxy: --hold-timeout must be more than 0 and at most %s\n", proxy.MaxTimeout)
		return 2
	}
	opts.Ports = ports
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := proxy.Run(ctx, opts, *control); err != nil {
		fmt.Fprintf(os.Stderr, "dso-init proxy: %v\n", err)
		return 1
	}
	return 0
}

// runProxyCtl is `dso-init proxy-ctl`: request on stdin, reply on stdout.
func runProxyCtl(args []string) int {
	fs := flag.NewFlagSet("dso-init proxy-ctl", flag.ContinueOnError)
	control := fs.String("control", proxy.ControlPath, "`PATH` of the control socket")
	session := fs.Bool("session", false, "take requests one a line, answer each with a line, until stdin ends")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *session {
		if err := proxy.CtlSession(os.Stdin, os.Stdout, *control); err != nil {
			fmt.Fprintf(os.Stderr, "dso-init proxy-ctl: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
			return 1
		}
		return 0
	}
	out, err := proxy.Ctl(os.Stdin, *control)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dso-init proxy-ctl: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	if _, err := os.Stdout.Write(out); err != nil {
		return 1
	}
	return 0
}
