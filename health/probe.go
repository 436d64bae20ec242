package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// prober runs the built-in probes: a TCP connect when Path is empty, an
// HTTP/1.1 GET otherwise. It has its own transport, separate from the
// data path's connections, and opens a new connection for each probe so a
// backend that stops accepting is noticed.
type prober struct {
	path, host string
	scheme     string // http or https
	lo, hi     int
	dialer     net.Dialer
	client     *http.Client
}

func newProber(a *ActiveOptions) *prober {
	p := &prober{path: a.Path, host: a.Host, lo: a.ExpectStatusMin, hi: a.ExpectStatusMax, scheme: "http"}
	if a.TLS != nil {
		p.scheme = "https"
	}
	if p.path != "" {
		p.client = &http.Client{
			Transport: &http.Transport{
				Proxy:             nil, // never via HTTP_PROXY: probe the backend itself
				DialContext:       p.dialer.DialContext,
				DisableKeepAlives: true,
				TLSClientConfig:   a.TLS,
				// The context bounds the probe; this only caps a slow head.
				ResponseHeaderTimeout:  a.Timeout,
				MaxResponseHeaderBytes: 64 << 10,
			},
			// A redirect is an answer: judge its status, do not follow it.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return p
}

// probe checks addr once; ctx bounds it. The error names addr and why.
func (p *prober) probe(ctx context.Context, addr string) error {
	start := time.Now()
	if p.client == nil {
		c, err := p.dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("probe tcp %s: %w", addr, err)
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.scheme+"://"+addr+p.path, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", addr, err)
	}
	if p.host != "" {
		req.Host = p.host
	}
	req.Header.Set("User-Agent", "kelpie-health")
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("probe GET %s%s: timeout after %s", addr, p.path, time.Since(start).Round(time.Millisecond))
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop the repeated "Get URL:"
		}
		return fmt.Errorf("probe GET %s%s: %w", addr, p.path, err)
	}
	resp.Body.Close() // the status decides; the body is not read
	if resp.StatusCode < p.lo || resp.StatusCode > p.hi {
		return fmt.Errorf("probe GET %s%s: status %d, want %d-%d", addr, p.path, resp.StatusCode, p.lo, p.hi)
	}
	return nil
}
