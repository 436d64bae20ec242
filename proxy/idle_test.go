package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/balancer"
)

// TestIdleConnParked: a keep-alive connection idle past a tick or two is
// parked (no goroutine), and its next request is served as before.
func TestIdleConnParked(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{})
	c, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r := rawOne(t, c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); r.StatusCode() != 200 {
		t.Fatalf("first request: %d", r.StatusCode())
	}
	c.SetDeadline(time.Time{})
	start := time.Now()
	waitFor(t, func() bool { return px.parkedConns() == 1 })
	t.Logf("parked after %s", time.Since(start))
	if r := rawOne(t, c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); r.StatusCode() != 200 || string(r.Body()) != "ok" {
		t.Fatalf("request after parking: %d %q", r.StatusCode(), r.Body())
	}
	if n := px.parkedConns(); n != 0 {
		t.Fatalf("%d parked while serving", n)
	}
}
