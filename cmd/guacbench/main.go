// Command guacbench measures guacproxy on one machine: side by side with the
// stand-in Guacamole it proxies to, a bare httputil.ReverseProxy, a tuned
// one and nginx, and on its own for cold logins and shutdown revocation.
// deploy/bench/run.sh builds it and runs "guacbench run"; the other
// subcommands are the processes that run starts.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `guacbench measures guacproxy against other proxies on this machine.

Usage:
  guacbench run --guacproxy BIN [flags]   the whole measurement (see -h)
  guacbench upstream --listen ADDR        the stand-in Guacamole
  guacbench proxy --listen ADDR --upstream URL [--tuned]
                                          a bare httputil.ReverseProxy
  guacbench inproc --listen ADDR --pprof ADDR --upstream URL
                                          guacproxy's handler with pprof
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "upstream":
		return cmdUpstream(args[1:])
	case "proxy":
		return cmdProxy(args[1:])
	case "inproc":
		return cmdInproc(args[1:])
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "guacbench: unknown command %q\n\n%s", args[0], usage)
	return 2
}
