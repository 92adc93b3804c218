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
// The proxy runs Go code on one CPU at a time (GOMAXPROCS 1, unless the
// environment sets GOMAXPROCS), so it has one event loop, each of whose
// wake-ups serves all the service's connections where two loops each woke
// for half of them: its threads sleep and wake less often, it costs less
// CPU per message, and the backend behind it runs out of work less often.
// One proxy serves one service, so the proxies of several services still
// spread over the host's CPUs. BenchmarkProxy, two CPUs, 64 connections of
// small requests: 0.52-0.55x a direct connection through agent-bound
// ports, where one loop per CPU made 0.50-0.52x, the proxy's CPU 12.7-13.2
// µs a request against 13.3-14.2 µs, the backend woken 0.28-0.39 times a
// request against 0.44-0.60 (with the backend on the host's loopback: the
// proxy's threads slept 0.08 times a request against 0.11).
func runProxy(args []string) int {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	fs := flag.NewFlagSet("dso-init proxy", flag.ContinueOnError)
	var ports portsFlag
	opts := proxy.Options{Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	fs.Var(&ports, "port", "`LISTEN[:TARGET]` port to forward (repeat for more)")
	fs.StringVar(&opts.Backend, "backend", "", "`HOST` new connections go to until the agent sets others (the compose service name)")
	fs.DurationVar(&opts.HoldTimeout, "hold-timeout", proxy.DefaultHoldTimeout, "longest wait of connections held during a swap")
	control := fs.String("control", proxy.ControlPath, "`PATH` of the control socket")
	if err := fs.Parse(args); err != nil {
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
