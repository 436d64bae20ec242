package proxy

import (
	"fmt"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

func TestEndToEndForwardsAndKeepsRawPath(t *testing.T) {
	var gotURI, gotHost string
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		gotURI = string(ctx.Request.Header.RequestURI())
		gotHost = string(ctx.Request.Header.Host())
		ctx.Response.Header.Set("X-Backend", "1")
		fmt.Fprintf(ctx, "hello %s", ctx.Method())
	})
	up := &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}
	px := proxyTo(t, up, Options{})
	c := clientFor(px.addr)
	for _, uri := range []string{"/", "/a/../b//c%2e%2F?x=1&y=%20", "/%252e%252e/x", `/a\b`} {
		resp := do(t, c, "GET", "Example.COM:8080", uri)
		if resp.StatusCode() != 200 || string(resp.Body()) != "hello GET" {
			t.Fatalf("%s: got %d %q", uri, resp.StatusCode(), resp.Body())
		}
		if gotURI != uri {
			t.Errorf("backend got target %q, want %q", gotURI, uri)
		}
		if gotHost != "Example.COM:8080" {
			t.Errorf("backend got Host %q", gotHost)
		}
		if string(resp.Header.Peek("X-Backend")) != "1" {
			t.Errorf("response header lost")
		}
	}
	if n := be.conns.Load(); n != 1 {
		t.Errorf("backend saw %d connections for 4 keep-alive requests, want 1", n)
	}
}
