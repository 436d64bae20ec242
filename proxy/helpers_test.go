package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// backend is a real fasthttp server on loopback that counts the bytes it
// read and the requests it served.
type backend struct {
	addr  string
	ln    net.Listener
	srv   *fasthttp.Server
	bytes atomic.Int64
	reqs  atomic.Int64
	conns atomic.Int64
}

type countingListener struct {
	net.Listener
	b *backend
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.b.conns.Add(1)
	return &countingConn{Conn: c, n: &l.b.bytes}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func startBackend(t testing.TB, h fasthttp.RequestHandler) *backend {
	t.Helper()
	return startBackendServer(t, &fasthttp.Server{Handler: h})
}

func startBackendServer(t testing.TB, srv *fasthttp.Server) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String(), ln: ln, srv: srv}
	h := srv.Handler
	srv.Handler = func(ctx *fasthttp.RequestCtx) {
		b.reqs.Add(1)
		h(ctx)
	}
	go srv.Serve(countingListener{ln, b}) //nolint:errcheck
	t.Cleanup(func() { _ = srv.Shutdown(); _ = ln.Close() })
	return b
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newPool(t testing.TB, algo balancer.Algorithm, addrs ...string) *balancer.Pool {
	t.Helper()
	p := balancer.NewPool(balancer.Options{Name: "web", Algorithm: algo})
	ms := make([]balancer.Member, len(addrs))
	for i, a := range addrs {
		ms[i] = balancer.Member{Address: a}
	}
	p.SetMembers(balancer.SourceStatic, ms)
	t.Cleanup(p.Close)
	return p
}

type testProxy struct {
	*Proxy
	addr string
}

func startProxy(t testing.TB, o Options, routes ...Route) *testProxy {
	t.Helper()
	p, err := New(o, routes)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testProxy{Proxy: p, addr: ln.Addr().String()}
}

// proxyTo starts a proxy with one catch-all route to pool.
func proxyTo(t testing.TB, up *Upstream, o Options) *testProxy {
	return startProxy(t, o, Route{Upstream: up})
}

// raw sends raw bytes on a new connection, half-closes nothing, and reads
// until the server closes or 5s pass. It returns everything read.
func raw(t testing.TB, addr, request string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// rawOne sends one request and parses one response, leaving the connection
// open; it returns the response and the connection.
func rawOne(t testing.TB, c net.Conn, request string) *fasthttp.Response {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp := &fasthttp.Response{SkipBody: strings.HasPrefix(request, "HEAD ")}
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		t.Fatalf("reading response to %q: %v", request, err)
	}
	return resp
}

func statusOf(resp string) string {
	line, _, _ := strings.Cut(resp, "\r\n")
	return line
}

// do sends one request through the proxy with a fresh client.
func do(t testing.TB, c *fasthttp.HostClient, method, host, uri string, hdr ...string) *fasthttp.Response {
	t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	req.Header.SetHost(host)
	req.UseHostHeader = true
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp := &fasthttp.Response{}
	if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, uri, err)
	}
	return resp
}

func clientFor(addr string) *fasthttp.HostClient {
	return &fasthttp.HostClient{Addr: addr, MaxIdemponentCallAttempts: 1, DisablePathNormalizing: true}
}
