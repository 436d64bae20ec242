// Command kelpie is a health-aware HTTP/1.1 load balancer.
//
//	kelpie run -config FILE      run the balancer
//	kelpie check -config FILE    validate a config file
//	kelpie config -defaults      print the default config
//	kelpie demo                  zero-setup tour on localhost
//	kelpie backends|drain|ready|drill  admin API clients
//	kelpie probe URL             health check for images without a shell
//	kelpie version
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `kelpie: a health-aware HTTP/1.1 load balancer

usage:
  kelpie run -config FILE [-watch]        run the balancer (SIGHUP reloads, SIGTERM drains and stops;
                                          -watch reloads on file change; -config defaults to $KELPIE_CONFIG)
  kelpie check -config FILE               validate a config file; prints FILE:LINE: problems
  kelpie config -defaults                 print the default config, every key with its default
  kelpie config -config FILE              print FILE's effective config, defaults filled in
  kelpie demo                             demo backends, balancer and dashboard on localhost
  kelpie backends [-admin URL] [-token T] [-json]
  kelpie drain [-admin URL] [-token T] [-json] UPSTREAM ADDRESS
  kelpie ready [-admin URL] [-token T] [-json] UPSTREAM ADDRESS
  kelpie drill [-admin URL] [-token T] [-fault refuse|blackhole|status=503|delay=500ms] [-for 30s]
               [-min-eligible N] [-max-client-errors N] [-json] UPSTREAM ADDRESS
  kelpie probe [-timeout 2s] URL          exit 0 if URL answers 2xx in time (image HEALTHCHECK)
  kelpie version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runRun(rest, stdout, stderr)
	case "check":
		return runCheck(rest, stdout, stderr)
	case "config":
		return runConfig(rest, stdout, stderr)
	case "demo":
		return runDemo(rest, stdout, stderr)
	case "backends":
		return runBackends(rest, stdout, stderr)
	case "drain":
		return runDrain(rest, stdout, stderr)
	case "ready":
		return runReady(rest, stdout, stderr)
	case "drill":
		return runDrill(rest, stdout, stderr)
	case "probe":
		return runProbe(rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "kelpie", version())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "kelpie: unknown command %q\n\n%s", cmd, usage)
	return 2
}
