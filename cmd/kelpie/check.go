package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/kelpie-lb/kelpie/config"
)

// runCheck validates a config file: exit 0 when valid, 1 with one
// "FILE:LINE: message" line per problem when not, 2 on usage errors.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file to validate")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: kelpie check -config FILE")
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d upstreams, %d routes)\n", *path, len(cfg.Upstreams), len(cfg.Routes))
	return 0
}

// loadConfig loads path, printing every problem as "FILE:LINE: message" to
// stderr when it is not a valid config.
func loadConfig(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, err := config.Load(path)
	if err == nil {
		return cfg, true
	}
	var ps config.Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			fmt.Fprintln(stderr, p)
		}
	} else {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
	}
	return nil, false
}
