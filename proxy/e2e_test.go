package proxy

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/internal/testkit"
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

func TestEndToEndBodies(t *testing.T) {
	be := startBackendServer(t, &fasthttp.Server{StreamRequestBody: true, Handler: func(ctx *fasthttp.RequestCtx) {
		var b []byte
		var err error
		if s := ctx.RequestBodyStream(); s != nil {
			b, err = io.ReadAll(s)
		}
		if err != nil {
			ctx.Error(err.Error(), 500)
			return
		}
		fmt.Fprintf(ctx, "%s %d %x", ctx.Method(), len(b), sha256.Sum256(b))
	}})
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{})
	for _, size := range []int{0, 1, 4095, 4096, 4097, 64 << 10, 1 << 20} {
		body := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		want := fmt.Sprintf("POST %d %x", size, sha256.Sum256(body))
		for _, chunked := range []bool{false, true} {
			req, resp := fasthttp.AcquireRequest(), &fasthttp.Response{}
			req.Header.SetMethod("POST")
			req.SetRequestURI("http://a/")
			if chunked {
				req.SetBodyStream(bytes.NewReader(body), -1)
			} else {
				req.SetBody(body)
			}
			if err := clientFor(px.addr).DoTimeout(req, resp, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if got := string(resp.Body()); resp.StatusCode() != 200 || got != want {
				t.Errorf("size %d chunked=%v: %d %q, want %q", size, chunked, resp.StatusCode(), got, want)
			}
		}
	}
	// HEAD keeps the backend's Content-Length and sends no body.
	c, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp := rawOne(t, c, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode() != 200 || resp.Header.ContentLength() != len("HEAD 0 ")+64 {
		t.Errorf("HEAD: %d, Content-Length %d", resp.StatusCode(), resp.Header.ContentLength())
	}
	resp = rawOne(t, c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n") // the connection is still in sync
	if !strings.HasPrefix(string(resp.Body()), "GET 0 ") {
		t.Errorf("GET after HEAD: %q", resp.Body())
	}
}

func TestIPHashUsesTrustedClientIP(t *testing.T) {
	var bes []*backend
	var addrs []string
	for i := range 3 {
		be := startBackend(t, func(ctx *fasthttp.RequestCtx) { fmt.Fprintf(ctx, "%d", i) })
		bes = append(bes, be)
		addrs = append(addrs, be.addr)
	}
	pool := newPool(t, balancer.IPHash, addrs...)
	px := proxyTo(t, &Upstream{Pool: pool}, Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	c := clientFor(px.addr)
	used := map[string]bool{}
	for i := range 30 {
		ip := fmt.Sprintf("198.51.100.%d", i)
		first := string(do(t, c, "GET", "a", "/", "X-Forwarded-For", ip).Body())
		for range 3 {
			// A spoofed leftmost entry must not move the client.
			if got := string(do(t, c, "GET", "a", "/", "X-Forwarded-For", "6.6.6.6, "+ip).Body()); got != first {
				t.Fatalf("client %s moved from backend %s to %s", ip, first, got)
			}
		}
		used[first] = true
	}
	if len(used) < 2 {
		t.Errorf("30 clients all hashed to %v", used)
	}
}

func TestAccessLogSampled(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(201) })
	var buf testkit.LogBuffer
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{
		AccessLog: slog.New(slog.NewJSONHandler(&buf, nil)), AccessLogSample: 2,
	})
	c := clientFor(px.addr)
	for range 4 {
		do(t, c, "GET", "a", "/x?y=1")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("access log with 1-in-2 sampling: %q", lines)
	}
	for _, want := range []string{`"status":201`, `"upstream":"web"`, `"backend":"` + be.addr + `"`, `"retries":0`, `"request_id":"`, `"duration":`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("access log line %s lacks %s", lines[0], want)
		}
	}
}
