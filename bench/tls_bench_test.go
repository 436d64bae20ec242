package bench

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/internal/testkit"
	"github.com/kelpie-lb/kelpie/proxy"
)

// These benchmarks are kelpie's side of issue 19's TLS and WebSocket
// figures, over real loopback sockets (the handshake is the cost being
// measured, so in-memory pipes would not do). The side-by-side comparison
// with HAProxy and nginx on the same certificate is not in bench/run.sh yet.

// tlsProxy serves a proxy to up on a loopback TLS listener with a fresh
// ECDSA P-256 certificate, and returns its address and the client config
// that trusts it.
func tlsProxy(b *testing.B, up *proxy.Upstream) (string, *tls.Config) {
	b.Helper()
	ca := testkit.NewCA(b)
	crt, key := ca.WritePair(b, b.TempDir(), "site", "bench.test")
	store, err := proxy.NewCertStore([]proxy.CertFile{{Cert: crt, Key: key}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := proxy.New(proxy.Options{}, []proxy.Route{{Upstream: up}})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go p.ServeTLS(ln, proxy.ServerTLSConfig(proxy.ServerTLSOptions{Certs: store})) //nolint:errcheck // ends at Shutdown
	b.Cleanup(func() {
		p.CloseTunnels(b.Context()) //nolint:errcheck // all are closed by then
		p.Shutdown(context.Background())
	})
	return ln.Addr().String(), &tls.Config{ServerName: "bench.test", RootCAs: ca.Pool()}
}

func loopbackPool(b *testing.B, addr string) *balancer.Pool {
	pool := balancer.NewPool(balancer.Options{Name: "bench"})
	pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: addr}})
	b.Cleanup(pool.Close)
	return pool
}

// BenchmarkTLSHandshake: a new TLS connection per request (TLS 1.3,
// ECDHE P-256 / ECDSA), as clients without keep-alive cost the proxy.
func BenchmarkTLSHandshake(b *testing.B) {
	be := testkit.StartBackend(b, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("hello") })
	addr, cfg := tlsProxy(b, &proxy.Upstream{Pool: loopbackPool(b, be.Addr)})
	req := []byte("GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
	buf := make([]byte, 4096)
	b.ResetTimer()
	for b.Loop() {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			b.Fatalf("read: %v %q", err, buf[:n])
		}
		c.Close()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

// BenchmarkTLSKeepAlive: requests on one TLS keep-alive connection.
func BenchmarkTLSKeepAlive(b *testing.B) {
	be := testkit.StartBackend(b, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("hello") })
	addr, cfg := tlsProxy(b, &proxy.Upstream{Pool: loopbackPool(b, be.Addr)})
	c := &fasthttp.HostClient{Addr: addr, IsTLS: true, TLSConfig: cfg, MaxConns: 1}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("https://bench.test/")
	for b.Loop() {
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatalf("%v %d", err, resp.StatusCode())
		}
	}
}

// BenchmarkWebSocketEcho: 1 KiB messages echoed through one tunnel on
// the TLS listener (wss) to a plain WebSocket backend.
func BenchmarkWebSocketEcho(b *testing.B) {
	wb := testkit.StartWSBackend(b, nil)
	addr, cfg := tlsProxy(b, &proxy.Upstream{Pool: loopbackPool(b, wb.Addr)})
	c := dialWSS(b, addr, cfg)
	msg := []byte(strings.Repeat("k", 1024))
	ctx := b.Context()
	b.SetBytes(int64(2 * len(msg)))
	for b.Loop() {
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			b.Fatal(err)
		}
		if _, got, err := c.Read(ctx); err != nil || len(got) != len(msg) {
			b.Fatalf("echo: %v", err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "echoes/s")
}

// BenchmarkTunnelMemory reports kelpie's heap per open tunnel: the heap
// grown by opening 200 tunnels (client, kelpie and backend share the
// process, so the clients' and backend's share is measured too and
// subtracted from a run against the backend directly).
func BenchmarkTunnelMemory(b *testing.B) {
	const n = 200
	wb := testkit.StartWSBackend(b, nil)
	addr, cfg := tlsProxy(b, &proxy.Upstream{Pool: loopbackPool(b, wb.Addr)})
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	open := func(dial func() *websocket.Conn) (perConn float64) {
		before := heap()
		conns := make([]*websocket.Conn, n)
		for i := range conns {
			conns[i] = dial()
			if err := conns[i].Write(b.Context(), websocket.MessageText, []byte("x")); err != nil {
				b.Fatal(err)
			}
			if _, _, err := conns[i].Read(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
		grown := float64(heap()) - float64(before)
		for _, c := range conns {
			c.CloseNow()
		}
		return grown / n
	}
	for b.Loop() {
		through := open(func() *websocket.Conn { return dialWSS(b, addr, cfg) })
		direct := open(func() *websocket.Conn { return dialWS(b, "ws://"+wb.Addr+"/") })
		b.ReportMetric(through-direct, "B/tunnel")
	}
}

func dialWSS(b *testing.B, addr string, cfg *tls.Config) *websocket.Conn {
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	hc := httpClientTLS(cfg)
	c, _, err := websocket.Dial(ctx, "wss://"+addr+"/", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		b.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	return c
}

func dialWS(b *testing.B, url string) *websocket.Conn {
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func httpClientTLS(cfg *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}
