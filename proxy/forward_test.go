package proxy

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

func statusBackend(t *testing.T, code int) *backend {
	return startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(code)
		ctx.WriteString("from backend")
	})
}

func checkIdle(t *testing.T, pool *balancer.Pool) {
	t.Helper()
	for _, b := range pool.Snapshot().Members {
		if n := b.InFlight(); n != 0 {
			t.Errorf("backend %s in flight %d after the request, want 0", b.Address(), n)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	block := make(chan struct{})
	slow := startBackend(t, func(ctx *fasthttp.RequestCtx) { <-block })
	t.Cleanup(func() { close(block) })
	reset := startRawBackend(t, func(rb *rawBackend, c net.Conn, br *bufio.Reader) {
		if rb.readHead(br) {
			resetConn(c)
		}
	})
	garbage := startRawBackend(t, func(rb *rawBackend, c net.Conn, br *bufio.Reader) {
		if rb.readHead(br) {
			c.Write([]byte("NOT HTTP AT ALL\r\n\r\n"))
		}
	})
	unavailable := statusBackend(t, 503)
	cases := []struct {
		name   string
		addrs  []string
		drain  bool
		status int
		body   string
		check  func(t *testing.T, up *Upstream, resp *fasthttp.Response)
	}{
		{name: "empty pool", status: 503, body: "kelpie: no backend available\n", check: func(t *testing.T, up *Upstream, resp *fasthttp.Response) {
			if string(resp.Header.Peek("Retry-After")) != "1" {
				t.Errorf("Retry-After = %q, want 1", resp.Header.Peek("Retry-After"))
			}
			if up.Stats.Unavailable.Load() != 1 {
				t.Errorf("Unavailable = %d, want 1", up.Stats.Unavailable.Load())
			}
		}},
		{name: "all drained", addrs: []string{unavailable.addr}, drain: true, status: 503, body: "kelpie: no backend available\n"},
		{name: "connect refused", addrs: []string{deadAddr(t)}, status: 502, body: "kelpie: cannot connect to backend\n", check: func(t *testing.T, up *Upstream, _ *fasthttp.Response) {
			if f := up.Pool.Snapshot().Members[0].Failures(); f != 1 {
				t.Errorf("failures = %d, want 1", f)
			}
		}},
		{name: "timeout", addrs: []string{slow.addr}, status: 504, body: "kelpie: backend timed out\n"},
		{name: "reset", addrs: []string{reset.addr}, status: 502, body: "kelpie: backend connection failed\n"},
		{name: "bad response", addrs: []string{garbage.addr}, status: 502, body: "kelpie: bad response from backend\n"},
		{name: "backend 503 passes through", addrs: []string{unavailable.addr}, status: 503, body: "from backend"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool := newPool(t, balancer.RoundRobin, tc.addrs...)
			if tc.drain {
				for _, a := range tc.addrs {
					if _, err := pool.Drain(a); err != nil {
						t.Fatal(err)
					}
				}
			}
			up := &Upstream{Pool: pool, ResponseTimeout: 200 * time.Millisecond}
			px := proxyTo(t, up, Options{})
			start := time.Now()
			resp := do(t, clientFor(px.addr), "GET", "a", "/")
			if resp.StatusCode() != tc.status || string(resp.Body()) != tc.body {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode(), resp.Body(), tc.status, tc.body)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
			if tc.check != nil {
				tc.check(t, up, resp)
			}
			checkIdle(t, pool)
		})
	}
}

func TestRetryGoesToAnotherBackend(t *testing.T) {
	good := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("good") })
	reset := startRawBackend(t, func(rb *rawBackend, c net.Conn, br *bufio.Reader) {
		if rb.readHead(br) {
			resetConn(c)
		}
	})
	block := make(chan struct{})
	slow := startBackend(t, func(ctx *fasthttp.RequestCtx) { <-block })
	t.Cleanup(func() { close(block) })
	unavailable := statusBackend(t, 503)
	// A small body is read whole before the client sees anything (bufferBody),
	// so one that breaks off can still be retried.
	cut := startRawBackend(t, func(rb *rawBackend, c net.Conn, br *bufio.Reader) {
		if rb.readHead(br) {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("x", 500)))
			resetConn(c)
		}
	})
	stall := startRawBackend(t, func(rb *rawBackend, c net.Conn, br *bufio.Reader) {
		if rb.readHead(br) {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("x", 500)))
			_, _ = br.ReadByte() // until the proxy gives up and closes
		}
	})

	cases := []struct {
		name    string
		bad     string
		method  string
		status  int
		retried bool
	}{
		{"connect GET", deadAddr(t), "GET", 200, true},
		{"connect POST", deadAddr(t), "POST", 200, true},
		{"reset GET", reset.addr, "GET", 200, true},
		{"reset POST not retried", reset.addr, "POST", 502, false},
		{"timeout GET", slow.addr, "GET", 200, true},
		{"timeout POST not retried", slow.addr, "POST", 504, false},
		{"503 GET", unavailable.addr, "GET", 200, true},
		{"503 POST passes through", unavailable.addr, "POST", 503, false},
		{"small body cut short GET", cut.addr, "GET", 200, true},
		{"small body cut short POST not retried", cut.addr, "POST", 502, false},
		{"small body stalled GET", stall.addr, "GET", 200, true},
		{"small body stalled POST not retried", stall.addr, "POST", 504, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool := firstPicks(t, newPool(t, balancer.RoundRobin, tc.bad, good.addr), tc.bad)
			up := &Upstream{Pool: pool, Retries: 1, ResponseTimeout: 200 * time.Millisecond}
			px := proxyTo(t, up, Options{})
			goodBefore := good.reqs.Load()
			resp := do(t, clientFor(px.addr), tc.method, "a", "/")
			if resp.StatusCode() != tc.status {
				t.Fatalf("got %d %q, want %d", resp.StatusCode(), resp.Body(), tc.status)
			}
			if got := good.reqs.Load() - goodBefore; (got == 1) != tc.retried {
				t.Errorf("good backend got %d requests, retried=%v", got, tc.retried)
			}
			if r := up.Stats.Retries.Load(); (r == 1) != tc.retried {
				t.Errorf("Stats.Retries = %d", r)
			}
			bad := pool.Lookup(tc.bad)
			if bad.Requests() != 1 {
				t.Errorf("bad backend attempts = %d, want 1", bad.Requests())
			}
			checkIdle(t, pool)
		})
	}
}

// Bodies up to maxBufferedBody are read whole, larger ones streamed; either
// way the client gets every byte and the backend connection goes back to the
// pool: the buffered read must end at the body's end, not drop the
// connection for having stopped short of io.EOF.
func TestResponseBodiesKeepTheBackendConnection(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		n, _ := strconv.Atoi(string(ctx.Path()[1:]))
		ctx.SetBody(bytes.Repeat([]byte{'a' + byte(n%26)}, n))
	})
	pool := newPool(t, balancer.RoundRobin, be.addr)
	px := proxyTo(t, &Upstream{Pool: pool}, Options{})
	c := clientFor(px.addr)
	for _, n := range []int{0, 1, 100, 4095, 4096, maxBufferedBody, maxBufferedBody + 1, 256 << 10} {
		for range 3 {
			resp := do(t, c, "GET", "a", "/"+strconv.Itoa(n))
			want := bytes.Repeat([]byte{'a' + byte(n%26)}, n)
			if resp.StatusCode() != 200 || !bytes.Equal(resp.Body(), want) {
				t.Fatalf("%d-byte body: got %d with %d bytes", n, resp.StatusCode(), len(resp.Body()))
			}
			if cl := resp.Header.ContentLength(); cl != n {
				t.Fatalf("%d-byte body: Content-Length %d", n, cl)
			}
		}
	}
	if got := be.conns.Load(); got != 1 {
		t.Errorf("backend saw %d connections for 24 sequential requests, want 1", got)
	}
	checkIdle(t, pool)
}

// firstPicks advances a two-member round-robin pool so that its next Pick
// returns addr, and returns the pool.
func firstPicks(t *testing.T, pool *balancer.Pool, addr string) *balancer.Pool {
	for range 4 {
		if next := pool.Pick(0, nil); next.Address() != addr {
			return pool // addr comes next
		}
	}
	t.Fatalf("round robin never picked %s", addr)
	return nil
}

func TestRetriesEachBackendOnce(t *testing.T) {
	var addrs []string
	var bes []*backend
	for range 3 {
		be := statusBackend(t, 503)
		bes = append(bes, be)
		addrs = append(addrs, be.addr)
	}
	pool := newPool(t, balancer.LeastConn, addrs...)
	up := &Upstream{Pool: pool, Retries: 10}
	px := proxyTo(t, up, Options{})
	resp := do(t, clientFor(px.addr), "GET", "a", "/")
	if resp.StatusCode() != 503 || string(resp.Body()) != "from backend" {
		t.Fatalf("got %d %q, want the last backend's 503", resp.StatusCode(), resp.Body())
	}
	for _, be := range bes {
		if n := be.reqs.Load(); n != 1 {
			t.Errorf("backend %s got %d requests, want exactly 1", be.addr, n)
		}
	}
	if r := up.Stats.Retries.Load(); r != 2 {
		t.Errorf("Retries = %d, want 2", r)
	}
}

func TestResetAfterResponseStartedClosesClient(t *testing.T) {
	partial := startRawBackend(t, func(rb *rawBackend, c net.Conn, br *bufio.Reader) {
		if rb.readHead(br) {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 5000)))
			resetConn(c)
		}
	})
	other := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("other") })
	pool := newPool(t, balancer.RoundRobin, partial.addr, other.addr)
	pool = firstPicks(t, pool, partial.addr)
	px := proxyTo(t, &Upstream{Pool: pool, Retries: 1}, Options{})
	out := raw(t, px.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n") // returns only when the proxy closes
	head, body, _ := strings.Cut(out, "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200") || len(body) >= 100000 {
		t.Fatalf("got %q with %d body bytes", statusOf(out), len(body))
	}
	if n := other.reqs.Load(); n != 0 {
		t.Errorf("a started response was retried: other backend got %d", n)
	}
	b := pool.Lookup(partial.addr)
	waitFor(t, func() bool { return b.InFlight() == 0 })
	if b.Failures() != 1 {
		t.Errorf("failures = %d, want 1 (reset mid-body)", b.Failures())
	}
}

func TestStaleKeepAliveRetried(t *testing.T) {
	// Serves one request per connection, advertising keep-alive, then closes:
	// every pooled connection is stale by the next request.
	be := startRawBackend(t, func(rb *rawBackend, c net.Conn, br *bufio.Reader) {
		if rb.readHead(br) {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		}
	})
	pool := newPool(t, balancer.RoundRobin, be.addr)
	up := &Upstream{Pool: pool, Retries: 0}
	px := proxyTo(t, up, Options{})
	c := clientFor(px.addr)
	for i := range 5 {
		for _, m := range []string{"GET", "HEAD", "DELETE"} {
			resp := do(t, c, m, "a", "/")
			if resp.StatusCode() != 200 {
				t.Fatalf("%s %d: %d %q", m, i, resp.StatusCode(), resp.Body())
			}
		}
	}
	if f := pool.Snapshot().Members[0].Failures(); f != 0 {
		t.Errorf("stale connections counted %d failures against the backend", f)
	}
	if r := up.Stats.Retries.Load(); r == 0 {
		t.Errorf("no stale connection was met: the test did not test anything")
	}
}
