package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
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

// parkedConn opens a connection to px, has it serve one request and waits
// until it is parked.
func parkedConn(t *testing.T, px *testProxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	before := px.parkedConns()
	if r := rawOne(t, c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); r.StatusCode() != 200 {
		t.Fatalf("first request: %d", r.StatusCode())
	}
	c.SetDeadline(time.Time{})
	waitFor(t, func() bool { return px.parkedConns() > before })
	return c
}

// okProxy proxies to a backend that answers "ok" and, in X-Seen, the
// method and path it got.
func okProxy(t *testing.T, o Options) *testProxy {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Seen", string(ctx.Method())+" "+string(ctx.Path()))
		ctx.WriteString("ok")
	})
	return proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, o)
}

// TestParkedConnPipelined: two requests in one write wake a parked
// connection, and both are answered in order.
func TestParkedConnPipelined(t *testing.T) {
	px := okProxy(t, Options{})
	c := parkedConn(t, px)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"GET /1", "GET /2"} {
		var r fasthttp.Response
		if err := r.Read(br); err != nil || r.StatusCode() != 200 {
			t.Fatalf("response to %s: %d %v", want, r.StatusCode(), err)
		}
		if got := string(r.Header.Peek("X-Seen")); got != want {
			t.Fatalf("backend saw %q, want %q", got, want)
		}
	}
}

// TestParkedConnTruncatedUpload: on a connection woken from parking, the
// request count starts again for fasthttp and the head scan alike
// (rawio/doc.go assumption 6), so a chunked body the client cuts off in its
// trailer section is still refused (400), not forwarded as complete:
// fasthttp's chunked reader takes that end for the end of the body, and only
// clientConn.bodyErr, matched by request number, tells otherwise.
func TestParkedConnTruncatedUpload(t *testing.T) {
	px := okProxy(t, Options{})
	c := parkedConn(t, px)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n")
	c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 400 ") {
		t.Fatalf("truncated upload on a resumed connection got %q, want 400", statusOf(string(b)))
	}
}

// TestParkedConnIdleTimeout: a parked connection is still closed at its
// idle timeout, without a response, as fasthttp closes an idle one.
func TestParkedConnIdleTimeout(t *testing.T) {
	const idle = 3 * time.Second
	px := okProxy(t, Options{IdleTimeout: idle})
	c, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rawOne(t, c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	start := time.Now()
	c.SetDeadline(start.Add(idle + 5*time.Second))
	waitFor(t, func() bool { return px.parkedConns() == 1 })
	b, err := io.ReadAll(c)
	took := time.Since(start)
	if len(b) != 0 || err != nil {
		t.Fatalf("at the idle timeout the client read %q %v, want a bare close", b, err)
	}
	if took < idle-200*time.Millisecond || took > idle+2*time.Second {
		t.Fatalf("closed after %s idle, want about %s", took, idle)
	}
	if n := px.parkedConns(); n != 0 {
		t.Fatalf("%d still parked", n)
	}
}

// TestShutdownClosesParked: Shutdown closes parked connections too, and
// returns at once (they are not in flight).
func TestShutdownClosesParked(t *testing.T) {
	px := okProxy(t, Options{})
	c := parkedConn(t, px)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := px.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
		t.Fatalf("parked connection after Shutdown: read %q %v, want a bare close", b, err)
	}
}

// TestParkedConnsCountTowardsCap: parked connections still count against
// Concurrency (limits.max_conns): past it a new one gets 503.
func TestParkedConnsCountTowardsCap(t *testing.T) {
	px := okProxy(t, Options{Concurrency: 2})
	parkedConn(t, px)
	parkedConn(t, px)
	c, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 503 ") {
		t.Fatalf("third connection with two parked under a cap of 2 got %q, want 503", statusOf(string(b)))
	}
}

// TestPartialHeadNotParked: a connection inside a request head keeps its
// goroutine and ReadTimeout (slowloris protection): it is not parked, and
// the rest of the head is served.
func TestPartialHeadNotParked(t *testing.T) {
	px := okProxy(t, Options{})
	c, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rawOne(t, c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	io.WriteString(c, "GET / HTTP/1.1\r\nHo")
	// Nothing to wait on: parking would happen within two ticks.
	time.Sleep(2*parkTick + 500*time.Millisecond)
	if n := px.parkedConns(); n != 0 {
		t.Fatalf("%d parked with a request head half sent", n)
	}
	if r := rawOne(t, c, "st: a\r\n\r\n"); r.StatusCode() != 200 {
		t.Fatalf("rest of the head: %d", r.StatusCode())
	}
}
