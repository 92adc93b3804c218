// Command dso-init is the static init DSO runs as PID 1 in front of a
// service's entrypoint (see internal/initproc), and the TCP proxy that owns
// a rolling service's host ports (see internal/proxy). It takes no secrets
// on its command line:
//
//	dso-init [--timeout 60s] -- ENTRYPOINT [ARG...]   supervise the application
//	dso-init deliver                                 hand a payload from stdin to PID 1
//	dso-init swarm -- ENTRYPOINT [ARG...]            a Swarm task: take the secrets from
//	                                                 /run/secrets/dso.VAR, then exec the application
//	dso-init proxy --port LISTEN[:TARGET]... --backend HOST [--hold-timeout 60s] [--control PATH]
//	dso-init proxy-ctl [--control PATH] [--session]  pass a request from stdin to the proxy (--session: one a line)
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
		case "swarm":
			_, argv, err := initproc.ParseArgs(args[1:])
			if err != nil {
				fmt.Fprintf(os.Stderr, "dso-init swarm: %v\n", err)
				return initproc.ExitSetup
			}
			return initproc.ExecSwarm(argv, os.Stderr)
		case "proxy":
			return runProxy(args[1:])
		case "proxy-ctl":
			return runProxyCtl(args[1:])
		}
	}
	timeout, argv, err := initproc.ParseArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dso-init: %v\n", err)
		return initproc.ExitSetup
	}
	return initproc.Supervise(initproc.Options{Argv: argv, Timeout: timeout, RunDir: initproc.RunDir, Stderr: os.Stderr})
}
