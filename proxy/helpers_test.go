package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// backend is a testkit.Backend (a fasthttp server on loopback) under the
// names proxy's tests use: addr, and the counters reqs (requests served),
// bytes (bytes read) and conns (connections accepted).
type backend struct {
	*testkit.Backend
	addr               string
	reqs, bytes, conns *atomic.Int64
}

func startBackend(t testing.TB, h fasthttp.RequestHandler) *backend {
	t.Helper()
	return asBackend(testkit.StartBackend(t, h))
}

func startBackendServer(t testing.TB, srv *fasthttp.Server) *backend {
	t.Helper()
	return asBackend(testkit.StartServer(t, srv))
}

func asBackend(b *testkit.Backend) *backend {
	return &backend{Backend: b, addr: b.Addr, reqs: &b.Requests, bytes: &b.BytesRead, conns: &b.Conns}
}

// rawBackend is a testkit.RawServer (for backends that misbehave below
// HTTP) under the names proxy's tests use.
type rawBackend struct {
	*testkit.RawServer
	addr string
}

// startRawBackend hands each connection to fn until the test ends.
func startRawBackend(t *testing.T, fn func(rb *rawBackend, c net.Conn, br *bufio.Reader)) *rawBackend {
	t.Helper()
	s := testkit.StartRaw(t, func(s *testkit.RawServer, c net.Conn, br *bufio.Reader) {
		fn(&rawBackend{RawServer: s, addr: s.Addr}, c, br)
	})
	return &rawBackend{RawServer: s, addr: s.Addr}
}

// readHead reads one request, head and body, and counts it in Heads.
func (rb *rawBackend) readHead(br *bufio.Reader) bool { return rb.ReadRequest(br) }

// resetConn closes c with an RST instead of a FIN.
func resetConn(c net.Conn) { testkit.ResetConn(c) }

// deadAddr is a loopback address nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	return testkit.FreeAddr(t)
}

// waitFor polls cond until it holds or 5s pass (end-to-end only, where no
// event exists to wait on).
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, "condition", cond)
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

// testIO is the I/O mode the end-to-end tests run the proxy in when they
// leave Options.IO empty: the default, or what KELPIE_TEST_IO names
// (TestStdIOSuite reruns them with "std").
var testIO = IOMode(os.Getenv("KELPIE_TEST_IO"))

// withTestIO sets o.IO to testIO unless the test chose a mode.
func withTestIO(o Options) Options {
	if o.IO == "" {
		o.IO = testIO
	}
	return o
}

func startProxy(t testing.TB, o Options, routes ...Route) *testProxy {
	t.Helper()
	p, err := New(withTestIO(o), routes)
	if err != nil {
		t.Fatal(err)
	}
	return serveProxy(t, p)
}

// serveProxy serves p on a loopback listener until the test ends.
func serveProxy(t testing.TB, p *Proxy) *testProxy {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", p.opts.IO) // as cmd/kelpie listens
	if err != nil {
		t.Fatal(err)
	}
	return serveProxyOn(t, p, ln)
}

// serveProxyOn serves p on ln until the test ends.
func serveProxyOn(t testing.TB, p *Proxy, ln net.Listener) *testProxy {
	t.Helper()
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
