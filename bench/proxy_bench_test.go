package bench

import (
	"net"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/health"
	"github.com/kelpie-lb/kelpie/proxy"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// defaultChecker is the health layer as the default config sets it up:
// passive ejection after 5 gateway errors and the circuit breaker on
// (config/validate.go), so benchmarks and allocation guards pay for the
// guard every attempt goes through.
func defaultChecker() *health.Checker {
	return health.New(health.Options{Passive: health.PassiveOptions{ConsecutiveFailures: 5}})
}

// inmemProxy is a proxy and a backend joined by in-memory listeners, and a
// client for the proxy: no syscalls, so the numbers are kelpie's own cost
// (plus fasthttp's client and server on both hops).
type inmemProxy struct {
	client *fasthttp.HostClient
	pool   *balancer.Pool
	stop   func()
}

func newInmemProxy(tb testing.TB) *inmemProxy {
	tb.Helper()
	beLn := fasthttputil.NewInmemoryListener()
	be := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.WriteString("hello") }}
	go be.Serve(beLn) //nolint:errcheck

	pool := balancer.NewPool(balancer.Options{Name: "bench", NewGuard: defaultChecker().NewGuard})
	pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "backend:80"}})
	up := &proxy.Upstream{Pool: pool, Dial: func(string, time.Duration) (net.Conn, error) { return beLn.Dial() }}
	p, err := proxy.New(proxy.Options{}, []proxy.Route{{Upstream: up}})
	if err != nil {
		tb.Fatal(err)
	}
	pxLn := fasthttputil.NewInmemoryListener()
	go p.Serve(pxLn) //nolint:errcheck

	c := &fasthttp.HostClient{Addr: "proxy:80", Dial: func(string) (net.Conn, error) { return pxLn.Dial() }, MaxIdemponentCallAttempts: 1}
	return &inmemProxy{client: c, pool: pool, stop: func() {
		_ = p.Shutdown(tb.Context())
		_ = be.Shutdown()
		pool.Close()
	}}
}

func (x *inmemProxy) roundTrip(tb testing.TB, req *fasthttp.Request, resp *fasthttp.Response) {
	if err := x.client.Do(req, resp); err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode() != 200 || len(resp.Body()) != 5 {
		tb.Fatalf("got %d %q", resp.StatusCode(), resp.Body())
	}
}

func benchRequest() *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI("http://app.example.com/api/v1/items?id=42")
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Cookie", "session=abc123")
	return req
}

// BenchmarkProxy is one proxied GET (client -> kelpie -> backend and back)
// over in-memory listeners.
func BenchmarkProxy(b *testing.B) {
	x := newInmemProxy(b)
	defer x.stop()
	req, resp := benchRequest(), fasthttp.AcquireResponse()
	x.roundTrip(b, req, resp) // warm the connection pools
	b.ReportAllocs()
	for b.Loop() {
		x.roundTrip(b, req, resp)
	}
}

// BenchmarkProxyParallel runs proxied GETs from GOMAXPROCS goroutines.
func BenchmarkProxyParallel(b *testing.B) {
	x := newInmemProxy(b)
	defer x.stop()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := benchRequest(), fasthttp.AcquireResponse()
		for pb.Next() {
			x.roundTrip(b, req, resp)
		}
	})
}
