// Command report computes the side-by-side benchmark's tables and verdicts
// from bench/run.sh's raw result lines (see bench/README.md).
//
//	report [-gen-cpu 0 -lb-cpu 1 -conns 50 -scale-duration 5s -context FILE] RAW
//	    the whole report of one run, as markdown, the targets table first
//	report pool [-key p99_us] RAW...
//	    the paired runs of several raw files pooled, per proxy
//	report median -load closed -target haproxy -key rps RAW
//	    one median, for run.sh's own use ("-" when there is none)
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/kelpie-lb/kelpie/bench/internal/report"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(2)
	}
}

var errUsage = errors.New("usage: report [flags] RAW | report pool [-key K] RAW... | report median -load L -target T -key K RAW")

func run(args []string, out io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "pool":
			return pool(args[1:], out)
		case "median":
			return median(args[1:], out)
		}
	}
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	var o report.Options
	fs.StringVar(&o.GenCPU, "gen-cpu", "0", "CPU of the load generator and backends")
	fs.StringVar(&o.LBCPU, "lb-cpu", "1", "CPU of the proxies")
	fs.IntVar(&o.Conns, "conns", 0, "wrk connections of the closed loop")
	fs.StringVar(&o.ScaleDuration, "scale-duration", "", "duration of each scaling run, e.g. 5s")
	ctx := fs.String("context", "", "file of markdown to print after the targets (when, where, versions)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errUsage
	}
	raw, err := report.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	if *ctx != "" {
		b, err := os.ReadFile(*ctx)
		if err != nil {
			return fmt.Errorf("context: %w", err)
		}
		o.Context = string(b)
	}
	return report.Write(out, raw, o)
}

func pool(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("pool", flag.ContinueOnError)
	key := fs.String("key", "p99_us", "the raw field to pool")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errUsage
	}
	var raws []report.Raw
	for _, path := range fs.Args() {
		raw, err := report.ReadFile(path)
		if err != nil {
			return err
		}
		raws = append(raws, raw)
	}
	return report.WritePool(out, report.PairRatios(raws, *key), *key, len(raws))
}

func median(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("median", flag.ContinueOnError)
	load := fs.String("load", "closed", "load= of the lines")
	target := fs.String("target", report.Base, "target= of the lines")
	key := fs.String("key", "rps", "the raw field")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errUsage
	}
	raw, err := report.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	m := raw.Median(*load, *target, *key)
	if math.IsNaN(m) {
		_, err = fmt.Fprintln(out, "-")
		return err
	}
	_, err = fmt.Fprintln(out, strconv.FormatFloat(m, 'f', -1, 64))
	return err
}
