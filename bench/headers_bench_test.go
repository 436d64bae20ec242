package bench

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/proxy"
	"github.com/valyala/fasthttp"
)

// rawRequest is a typical browser-ish request with a Connection-nominated
// header and an incoming X-Forwarded-For.
const rawRequest = "GET /api/v1/items?id=42 HTTP/1.1\r\n" +
	"Host: app.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) bench\r\n" +
	"Accept: text/html,application/xhtml+xml\r\n" +
	"Accept-Language: en-GB,en;q=0.9\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Cookie: session=abc123; theme=dark\r\n" +
	"Connection: keep-alive, X-Debug\r\n" +
	"X-Debug: 1\r\n" +
	"X-Forwarded-For: 198.51.100.7\r\n" +
	"\r\n"

func newHeaderProxy(tb testing.TB) *proxy.Proxy {
	pool := balancer.NewPool(balancer.Options{Name: "bench"})
	tb.Cleanup(pool.Close)
	routes := []proxy.Route{
		{Host: "app.example.com", PathPrefix: "/api/", Upstream: &proxy.Upstream{Pool: pool}},
		{Host: "app.example.com", PathPrefix: "/", Upstream: &proxy.Upstream{Pool: pool}},
		{PathPrefix: "/", Upstream: &proxy.Upstream{Pool: pool}},
	}
	p, err := proxy.New(proxy.Options{}, routes)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// parsed returns a request parsed from rawRequest, as the listener would.
func parsed(tb testing.TB, req *fasthttp.Request) {
	req.Reset()
	req.Header.DisableNormalizing() // as kelpie's server parses: names as sent
	if err := req.Header.Read(bufio.NewReader(strings.NewReader(rawRequest))); err != nil {
		tb.Fatal(err)
	}
}

var peer = netip.MustParseAddr("203.0.113.5")

// BenchmarkHeaderRewrite is kelpie's header path for one request:
// validation of the raw header block, routing, hop-by-hop stripping and the
// forwarding headers. Parsing is excluded; restoring the parsed header from
// a copy (a few memmoves) is included.
func BenchmarkHeaderRewrite(b *testing.B) {
	p := newHeaderProxy(b)
	var saved, req fasthttp.Request
	parsed(b, &saved)
	b.ReportAllocs()
	for b.Loop() {
		saved.Header.CopyTo(&req.Header)
		req.UseHostHeader = false
		if p.Match(req.Header.Host(), req.Header.RequestURI()) == nil {
			b.Fatal("no route")
		}
		if st := p.PrepareRequest(&req, peer, false); st != 0 {
			b.Fatalf("status %d", st)
		}
	}
}

// BenchmarkRoute is the route lookup alone.
func BenchmarkRoute(b *testing.B) {
	p := newHeaderProxy(b)
	host, uri := []byte("App.Example.com:443"), []byte("/api/v1/items?id=42")
	b.ReportAllocs()
	for b.Loop() {
		if p.Match(host, uri) == nil {
			b.Fatal("no route")
		}
	}
}
