package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/kelpie-lb/kelpie/admin"
)

// clientTimeout bounds one CLI call to the admin API.
const clientTimeout = 10 * time.Second

// clientFlags declares the flags every admin client subcommand shares.
func clientFlags(name string, stderr io.Writer) (*flag.FlagSet, *admin.Client, *bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &admin.Client{}
	fs.StringVar(&c.BaseURL, "admin", admin.DefaultURL, "admin API URL")
	fs.StringVar(&c.Token, "token", os.Getenv("KELPIE_ADMIN_TOKEN"), "bearer token for drain and ready (default $KELPIE_ADMIN_TOKEN)")
	asJSON := fs.Bool("json", false, "print the API's raw JSON")
	return fs, c, asJSON
}

// runBackends is `kelpie backends`: every upstream's backends as a table.
func runBackends(args []string, stdout, stderr io.Writer) int {
	fs, c, asJSON := clientFlags("backends", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: kelpie backends [-admin URL] [-token T] [-json]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	resp, raw, err := c.Upstreams(ctx)
	if err != nil {
		return clientError(stderr, "backends", c, err)
	}
	if *asJSON {
		stdout.Write(raw)
		return 0
	}
	if err := admin.WriteTable(stdout, resp); err != nil {
		fmt.Fprintf(stderr, "kelpie backends: %v\n", err)
		return 1
	}
	return 0
}

// runDrain is `kelpie drain [-fleet] [-reason R] UPSTREAM ADDRESS`.
func runDrain(args []string, stdout, stderr io.Writer) int {
	return runBackendCall("drain", (*admin.Client).DrainWith, args, stdout, stderr)
}

// runReady is `kelpie ready [-fleet] UPSTREAM ADDRESS`.
func runReady(args []string, stdout, stderr io.Writer) int {
	return runBackendCall("ready", (*admin.Client).ReadyWith, args, stdout, stderr)
}

type backendCall func(c *admin.Client, ctx context.Context, upstream, address string, o admin.DrainOptions) (admin.Backend, []byte, error)

func runBackendCall(name string, do backendCall, args []string, stdout, stderr io.Writer) int {
	fs, c, asJSON := clientFlags(name, stderr)
	fleet := fs.Bool("fleet", false, "for every instance of the cluster (recorded in Consul)")
	var o admin.DrainOptions
	if name == "drain" {
		fs.StringVar(&o.Reason, "reason", "", "why, shown by the API, the CLI and the dashboard")
		fs.StringVar(&o.By, "by", whoAmI(), "who")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fmt.Fprintf(stderr, "usage: kelpie %s [-admin URL] [-token T] [-json] [-fleet] UPSTREAM ADDRESS\n", name)
		return 2
	}
	if *fleet {
		o.Scope = admin.ScopeFleet
	}
	upstream, address := fs.Arg(0), fs.Arg(1)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	b, raw, err := do(c, ctx, upstream, address, o)
	if err != nil {
		return clientError(stderr, name, c, err)
	}
	if *asJSON {
		stdout.Write(raw)
		return 0
	}
	admin.WriteBackend(stdout, upstream, b)
	if b.Admin == "draining" {
		fmt.Fprintf(stdout, "%d request(s) still in flight; `kelpie backends` shows drained once they finish\n", b.InFlight)
	}
	return 0
}

// clientError prints err with a hint at the likely fix and returns exit
// code 1.
func clientError(stderr io.Writer, name string, c *admin.Client, err error) int {
	fmt.Fprintf(stderr, "kelpie %s: %v\n", name, err)
	var apiErr *admin.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.Status == 401:
		fmt.Fprintln(stderr, "hint: pass the admin token with -token or the KELPIE_ADMIN_TOKEN environment variable")
	case errors.Is(err, syscall.ECONNREFUSED):
		fmt.Fprintf(stderr, "hint: is kelpie running with its admin endpoint on %s? Point -admin at it.\n", c.Base())
	}
	return 1
}
