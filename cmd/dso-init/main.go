// Command dso-init is the static init DSO runs as PID 1 in front of a
// service's entrypoint (see internal/initproc), and the TCP proxy that owns
// a rolling service's host ports (see internal/proxy). It takes no secrets
// on its command line:
//
//	dso-init [--timeout 60s] -- ENTRYPOINT [ARG...]   supervise the application
//	dso-init deliver                                 hand a payload from stdin to PID 1
//	dso-init proxy --port LISTEN[:TARGET]... --backend HOST [--hold-timeout 60s] [--control PATH]
//	dso-init proxy-ctl [--control PATH]              pass a request from stdin to the proxy
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/dso-project/dso/internal/initproc"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "deliver":
			if err := initproc.Deliver(os.Stdin, initproc.SocketPath, 10*time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "dso-init deliver: %v\n", err)
				return 1
			}
			return 0
		case "proxy":
			return runProxy(args[1:])
		case "proxy-ctl":
			return runProxyCtl(args[1:])
		}
	}
	timeout := 60 * time.Second
	for len(args) > 0 && args[0] != "--" {
		switch {
		case args[0] == "--timeout" && len(args) > 1:
			d, err := time.ParseDuration(args[1])
			if err != nil || d <= 0 {
				fmt.Fprintf(os.Stderr, "dso-init: bad --timeout %q\n", args[1])
				return initproc.ExitSetup
			}
			timeout = d
			args = args[2:]
		default:
			fmt.Fprintf(os.Stderr, "dso-init: unknown argument %q (usage: dso-init [--timeout D] -- COMMAND...)\n", args[0])
			return initproc.ExitSetup
		}
	}
	if len(args) > 0 {
		args = args[1:]
	}
	return initproc.Supervise(initproc.Options{Argv: args, Timeout: timeout, RunDir: initproc.RunDir, Stderr: os.Stderr})
}
