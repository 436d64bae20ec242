package testkit

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"
)

// Backend is a real fasthttp server on a loopback port. It counts the
// requests it serves, the connections it accepts and the bytes it reads;
// Close stops it gracefully and Kill like a crashed process. It stops when
// the test ends.
type Backend struct {
	// Addr is the "host:port" it listens on ("127.0.0.1:port" unless ServeOn was given another listener).
	Addr string
	// Requests counts requests handed to the handler (every path,
	// health probes included).
	Requests atomic.Int64
	// Conns counts accepted connections.
	Conns atomic.Int64
	// BytesRead counts bytes read from all connections: a request the
	// proxy refused to forward leaves it unchanged.
	BytesRead atomic.Int64

	srv       *fasthttp.Server
	ln        net.Listener
	closeOnce sync.Once

	mu   sync.Mutex
	open map[net.Conn]struct{}
	dead bool
}

// StartBackend serves h on a free loopback port.
func StartBackend(t testing.TB, h fasthttp.RequestHandler) *Backend {
	t.Helper()
	return StartServer(t, &fasthttp.Server{Handler: h})
}

// StartServer serves srv (its Handler, which must be set, and limits as
// configured) on a free loopback port; it wraps srv.Handler to count
// requests.
func StartServer(t testing.TB, srv *fasthttp.Server) *Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("backend listen: %v", err)
	}
	return ServeOn(t, srv, ln)
}

// ServeOn is StartServer on a listener of the caller's (Host.Listen's, for
// one): the backend owns ln from then on.
func ServeOn(t testing.TB, srv *fasthttp.Server, ln net.Listener) *Backend {
	t.Helper()
	b := &Backend{Addr: ln.Addr().String(), srv: srv, ln: ln, open: map[net.Conn]struct{}{}}
	h := srv.Handler
	srv.Handler = func(ctx *fasthttp.RequestCtx) {
		b.Requests.Add(1)
		h(ctx)
	}
	go srv.Serve(trackingListener{ln, b}) //nolint:errcheck // ends at Close or Kill
	t.Cleanup(b.Close)
	return b
}

// Close stops the backend gracefully: the listener closes, idle
// connections close, and it waits for requests in progress. It may be
// called more than once, and after Kill.
func (b *Backend) Close() {
	b.closeOnce.Do(func() {
		_ = b.srv.Shutdown()
		_ = b.ln.Close()
	})
}

// Kill stops the backend as a crash would: the listener closes and every
// open connection is reset (RST, not FIN), requests in progress included.
// Handlers still running are not stopped; the Close at the end of the test
// waits for them, so a test that parks a handler must release it first.
func (b *Backend) Kill() {
	b.mu.Lock()
	b.dead = true
	open := b.open
	b.open = map[net.Conn]struct{}{}
	b.mu.Unlock()
	_ = b.ln.Close()
	for c := range open {
		ResetConn(c.(*trackedConn).Conn)
	}
}

// Named answers every request with 200 and body name.
func Named(name string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) { ctx.WriteString(name) }
}

// trackingListener counts and remembers accepted connections, so that Kill
// can reset them.
type trackingListener struct {
	net.Listener
	b *Backend
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	b := l.b
	b.Conns.Add(1)
	tc := &trackedConn{Conn: c, b: b}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dead { // accepted in the instant of the kill
		ResetConn(c)
		return nil, net.ErrClosed
	}
	b.open[tc] = struct{}{}
	return tc, nil
}

type trackedConn struct {
	net.Conn
	b *Backend
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.b.BytesRead.Add(int64(n))
	return n, err
}

func (c *trackedConn) Close() error {
	c.b.mu.Lock()
	delete(c.b.open, c)
	c.b.mu.Unlock()
	return c.Conn.Close()
}
