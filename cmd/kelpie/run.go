package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	_ "net/http/pprof" // served only on -pprof's own listener
	"os"
	"os/signal"
	"syscall"
)

// runRun is `kelpie run`: load, start, then serve until SIGTERM/SIGINT,
// reloading on SIGHUP. Exit 0 after a clean shutdown, 1 on errors.
func runRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("KELPIE_CONFIG"), "config file (default $KELPIE_CONFIG)")
	watch := fs.Bool("watch", false, "reload when the config file's content changes (same rules as SIGHUP)")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060); off by default")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: kelpie run -config FILE [-watch] [-pprof ADDR]")
		return 2
	}
	var cw *configWatch
	if *watch {
		cw = newConfigWatch(*path) // before loading: a change in between reloads once more
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 1
	}
	log, level := newLogger(cfg.Log, stderr)
	a, err := newApp(cfg, log, level)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if *pprofAddr != "" {
		go func() {
			if err := http.ListenAndServe(*pprofAddr, http.DefaultServeMux); err != nil {
				log.Error("pprof server stopped", "err", err)
			}
		}()
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := a.start("", ""); err != nil {
		log.Error("cannot start", "err", err)
		a.shutdown()
		return 1
	}
	if *watch {
		// A change is handled exactly like SIGHUP, by the loop below.
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go watchConfig(ctx, cw, watchInterval, func() {
			log.Info("config file changed", "file", *path)
			select {
			case sigs <- syscall.SIGHUP:
			case <-ctx.Done():
			}
		})
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			a.reload()
			continue
		}
		log.Info("signal received", "signal", sig.String())
		done := make(chan error, 1)
		go func() { done <- a.shutdown() }()
		for {
			select {
			case err := <-done:
				if err != nil {
					log.Error("shutdown", "err", err)
					return 1
				}
				return 0
			case sig := <-sigs:
				if sig == syscall.SIGHUP {
					continue // no reloads while stopping
				}
				log.Warn("second signal: exiting now", "signal", sig.String())
				return 1
			}
		}
	}
	return 0
}
