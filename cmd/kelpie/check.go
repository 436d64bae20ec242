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

// runConfig is `kelpie config`: the effective config as YAML, either the
// defaults (-defaults) or a file's with every default filled in (-config).
// Exit 0, 1 when the file is invalid, 2 on usage errors.
func runConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defaults := fs.Bool("defaults", false, "print the default config: every key with its default")
	path := fs.String("config", "", "print this file's effective config, defaults filled in")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *defaults == (*path != "") || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: kelpie config -defaults | -config FILE")
		return 2
	}
	cfg, header := config.Defaults(), defaultsHeader
	if *path != "" {
		var ok bool
		if cfg, ok = loadConfig(*path, stderr); !ok {
			return 1
		}
		header = fmt.Sprintf("# %s with every default filled in (kelpie config -config).\n", *path)
	}
	out, err := config.Marshal(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "kelpie config: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, header)
	stdout.Write(out)
	return 0
}

const defaultsHeader = `# kelpie's defaults: every key with the value it takes when a file leaves it
# out. A file needs at least one upstream, so "web" is an example: its
# backends, consul and health.active blocks are each optional and shown here
# for their defaults. kelpie check -config accepts this file as it is.
`

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
