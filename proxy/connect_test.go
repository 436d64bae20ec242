package proxy

import (
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// blackHole returns a loopback address whose connects hang: a socket that
// listens with a zero backlog and never accepts, its queue filled by a
// connection made here. Linux then drops further SYNs, so a dialer waits
// until its own timeout, as it would for a host that went silent.
func blackHole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the accept queue; once a dial hangs, the hole is ready.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
		if i == 16 {
			t.Fatal("the zero-backlog listener kept accepting connections")
		}
	}
	return addr
}

// TestConnectTimeoutFailsOver: a backend whose connects hang costs a request
// no more than timeouts.connect, and the request, even a POST (nothing was
// sent), is retried on another backend.
func TestConnectTimeoutFailsOver(t *testing.T) {
	hole := blackHole(t)
	good := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("good") })
	pool := newPool(t, balancer.RoundRobin, hole, good.addr)
	const connect = 250 * time.Millisecond
	px := proxyTo(t, &Upstream{Pool: pool, ConnectTimeout: connect, Retries: 1}, Options{})
	c := clientFor(px.addr)
	for i := range 4 { // round robin: at least two of these start on the hole
		start := time.Now()
		resp := do(t, c, "POST", "a", "/", "Content-Type", "text/plain")
		took := time.Since(start)
		if resp.StatusCode() != 200 || string(resp.Body()) != "good" {
			t.Fatalf("request %d: %d %q, want 200 from the good backend", i, resp.StatusCode(), resp.Body())
		}
		if took > connect+time.Second {
			t.Fatalf("request %d took %s with a %s connect timeout", i, took, connect)
		}
	}
	if f := pool.Lookup(hole).Failures(); f < 2 {
		t.Fatalf("the black hole counted %d failures, want at least 2 connect timeouts", f)
	}

	// With no retry left, the client gets 502 after about the connect timeout.
	only := newPool(t, balancer.RoundRobin, hole)
	px2 := proxyTo(t, &Upstream{Pool: only, ConnectTimeout: connect, Retries: 0}, Options{})
	start := time.Now()
	resp := do(t, clientFor(px2.addr), "GET", "a", "/")
	took := time.Since(start)
	if resp.StatusCode() != 502 {
		t.Fatalf("connect timeout answered %d, want 502", resp.StatusCode())
	}
	if took < connect*8/10 || took > connect+time.Second {
		t.Fatalf("502 after %s, want about the %s connect timeout", took, connect)
	}
}

// TestConnectionCapAnswers503: past limits.max_conns client connections, a
// new connection is answered 503 and closed instead of queueing, and the
// connections already open keep working.
func TestConnectionCapAnswers503(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{Concurrency: 2})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", px.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// The two held connections use the cap: serve one request on each so
	// the server has certainly accepted both.
	buf := make([]byte, 4096)
	for _, c := range held {
		c.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			t.Fatalf("held connection: %q %v", buf[:n], err)
		}
	}
	extra, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := extra.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 503") {
		t.Fatalf("connection over the cap got %q, want a 503", buf[:n])
	}
	held[0].Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	if n, err := held[0].Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatalf("held connection after the refusal: %q %v", buf[:n], err)
	}
}
