package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// defaultProbeTimeout bounds `kelpie probe` when -timeout is not given; it
// matches the image's HEALTHCHECK, whose own timeout is longer.
const defaultProbeTimeout = 2 * time.Second

// runProbe is `kelpie probe URL [-timeout 2s]`: a health check for images
// with no shell or curl (the Dockerfile's HEALTHCHECK, Kubernetes exec
// probes). Exit 0 when URL answers 2xx within the timeout, 1 otherwise
// (non-2xx, redirect, refused, timeout), 2 on usage errors. Redirects are not
// followed: a health endpoint that redirects is misconfigured.
func runProbe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", defaultProbeTimeout, "fail unless a 2xx arrives within this time")
	quiet := fs.Bool("q", false, "print nothing on success")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// The flags may also follow the URL, as in `kelpie probe URL -timeout 1s`.
	var url string
	if fs.NArg() > 0 {
		url = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if url == "" || fs.NArg() > 0 || *timeout <= 0 {
		fmt.Fprintln(stderr, "usage: kelpie probe [-timeout 2s] [-q] URL")
		return 2
	}
	status, err := probe(url, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "kelpie probe: %v\n", err)
		return 1
	}
	if !*quiet {
		fmt.Fprintf(stdout, "%s: %s\n", url, status)
	}
	return 0
}

// probe sends one GET to url and returns the status line when it is 2xx.
func probe(url string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("url %q: %w", url, err)
	}
	req.Header.Set("User-Agent", "kelpie-probe/"+version())
	c := &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s: no answer within %s", url, timeout)
		}
		return "", fmt.Errorf("%s: %w", url, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("%s: status %s, want 2xx", url, resp.Status)
	}
	return resp.Status, nil
}
