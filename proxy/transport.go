package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/proxy/internal/rawio"
	"github.com/valyala/fasthttp"
)

// transport carries requests to one backend: the seam between an attempt
// and the wire. Do sends req and reads the response head into resp; a body
// may be left streaming (resp.BodyStream). A failure to connect is returned
// as a *dialError. wire says what reached the connection, which is what
// blame is decided on (attempt.go). Implementations are safe for concurrent
// use. hostTransport (fasthttp's HostClient) is the one kelpie runs; tests
// script backends through the same seam without sockets, and TLS or
// WebSocket upstreams would plug in here.
type transport interface {
	Do(req *fasthttp.Request, resp *fasthttp.Response) (wire, error)
	// CloseIdleConnections closes the pooled connections not in use.
	CloseIdleConnections()
}

// wire is what one attempt did on its connection. A transport fills it in
// when Do fails; a successful Do implies sent and gotBytes.
type wire struct {
	reused   bool // the connection had carried an earlier request: it may have gone stale
	sent     bool // some of the request was handed to the connection
	gotBytes bool // a byte of the response arrived
}

// transports holds each backend's transport for the Proxy, keyed by the
// long-lived *balancer.Backend, so a backend keeps its connections across
// snapshot rebuilds and reloads. Lookups load an immutable map through an
// atomic pointer: no lock, no allocation. Adding a backend copies the map
// under mu; the copy drops backends that have left their pool (a Backend
// that left never returns: a returning address is a new Backend) and closes
// their idle connections.
type transports struct {
	std bool // Options.IO is IOStd: upConns use net.Conn's Read and Write
	mu  sync.Mutex
	m   atomic.Pointer[map[*balancer.Backend]*backendTransport]
}

// backendTransport is one backend's slot: the transport for the settings it
// was built with. A reload with different connection settings swaps in a
// new one and closes the old one's idle connections; one with the same
// settings keeps the pool warm.
type backendTransport struct {
	cur atomic.Pointer[builtTransport]
}

type builtTransport struct {
	set    settings
	hooked bool // built from Upstream.Dial or Upstream.newTransport
	t      transport
}

// get returns b's transport under up's settings.
func (ts *transports) get(up *Upstream, b *balancer.Backend) transport {
	var slot *backendTransport
	if m := ts.m.Load(); m != nil {
		slot = (*m)[b]
	}
	if slot == nil {
		slot = ts.add(b)
	}
	set := up.settings()
	set.stdIO = ts.std
	// Funcs cannot be compared, so only whether a hook is set keys the
	// transport: a reload that swaps one set hook for another keeps the
	// first. kelpie's config sets no hooks; tests and benchmarks set them
	// once per Upstream.
	hooked := up.Dial != nil || up.newTransport != nil || up.lookup != nil
	for {
		c := slot.cur.Load()
		if c != nil && c.set == set && c.hooked == hooked {
			return c.t
		}
		n := &builtTransport{set: set, hooked: hooked}
		if up.newTransport != nil {
			n.t = up.newTransport(b.Address())
		} else {
			n.t = newHostTransport(b.Address(), set, up.dial(set))
		}
		if slot.cur.CompareAndSwap(c, n) {
			if c != nil {
				c.t.CloseIdleConnections()
			}
			return n.t
		}
	}
}

// add makes b's slot, once, and sweeps out backends that have left.
func (ts *transports) add(b *balancer.Backend) *backendTransport {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if m := ts.m.Load(); m != nil && (*m)[b] != nil {
		return (*m)[b]
	}
	s := &backendTransport{}
	ts.sweep(func(ob *balancer.Backend) bool { return ob.Down()&balancer.ReasonRemoved == 0 }, b, s)
	return s
}

// retain keeps the transports of the backends routes can reach and closes
// the rest: SetRoutes calls it, so an upstream dropped by a reload does not
// keep its backends' clients. A request still in flight on a dropped one
// gets a new slot if it needs one, swept at the next change.
func (ts *transports) retain(routes []Route) {
	live := map[*balancer.Backend]bool{}
	for _, r := range routes {
		if r.Upstream != nil && r.Upstream.Pool != nil {
			for _, b := range r.Upstream.Pool.Snapshot().Members {
				live[b] = true
			}
		}
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.sweep(func(b *balancer.Backend) bool { return live[b] && b.Down()&balancer.ReasonRemoved == 0 }, nil, nil)
}

// sweep publishes a copy of the map holding the backends keep accepts, plus
// add's slot s when add is set, and closes the dropped ones' idle
// connections. Called with mu held.
func (ts *transports) sweep(keep func(*balancer.Backend) bool, add *balancer.Backend, s *backendTransport) {
	var old map[*balancer.Backend]*backendTransport
	if m := ts.m.Load(); m != nil {
		old = *m
	}
	m := make(map[*balancer.Backend]*backendTransport, len(old)+1)
	for b, bt := range old {
		if keep(b) {
			m[b] = bt
		} else {
			bt.closeIdle()
		}
	}
	if add != nil {
		m[add] = s
	}
	ts.m.Store(&m)
}

func (s *backendTransport) closeIdle() {
	if c := s.cur.Load(); c != nil {
		c.t.CloseIdleConnections()
	}
}

// hostTransport is a backend's fasthttp.HostClient: a LIFO keep-alive pool
// of upConns with fasthttp's own retries off (kelpie retries, on other
// backends).
type hostTransport struct {
	hc *fasthttp.HostClient
}

// newHostTransport dials with dial: Upstream.dial's, a resolver for DNS
// names (resolve.go) unless a test set Upstream.Dial.
func newHostTransport(addr string, set settings, dial func(string, time.Duration) (net.Conn, error)) *hostTransport {
	if set.tls != nil {
		dial = dialTLS(dial, set.tls)
	}
	pending := new(atomic.Int32) // unproven connections (Upstream.MaxPendingConnects)
	hc := &fasthttp.HostClient{
		Addr: addr,
		Dial: func(addr string) (net.Conn, error) {
			if pending.Add(1) > int32(set.maxPending) {
				pending.Add(-1)
				return nil, ErrConnectsPending
			}
			c, err := dial(addr, set.connect)
			if err != nil {
				pending.Add(-1)
				return nil, &dialError{err}
			}
			u := newUpConn(c, set)
			u.pending.Store(pending)
			return u, nil
		},
		MaxConns:                      set.maxConns,
		MaxIdleConnDuration:           set.idle,
		ReadTimeout:                   set.response, // re-armed per phase by upConn
		WriteTimeout:                  set.write,    // marks each request's start for upConn
		MaxIdemponentCallAttempts:     1,
		RetryIfErr:                    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		ConnPoolStrategy:              fasthttp.LIFO,
		DisablePathNormalizing:        true,
		DisableHeaderNamesNormalizing: true, // names as sent, both ways (cleanResponse folds case)
		NoDefaultUserAgentHeader:      true,
		StreamResponseBody:            true,
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
	}
	return &hostTransport{hc: hc}
}

// Do runs one request on a pooled connection. On failure it reads the
// connection's per-request facts: fasthttp tags the Response with the
// connection's LocalAddr (connAddr), its only way of naming the connection a
// request ran on. A failed request's connection is closed, never pooled, so
// no other request is writing those facts. A successful one may already be
// back in the pool: its facts are not read.
func (t *hostTransport) Do(req *fasthttp.Request, resp *fasthttp.Response) (wire, error) {
	err := t.hc.Do(req, resp)
	if err == nil {
		return wire{sent: true, gotBytes: true}, nil
	}
	var w wire
	if a, ok := resp.LocalAddr().(*connAddr); ok {
		c := a.c
		w = wire{reused: c.requests > 1, sent: c.sent, gotBytes: c.gotBytes}
	}
	return w, err
}

// CloseIdleConnections closes the pooled connections not in use.
func (t *hostTransport) CloseIdleConnections() { t.hc.CloseIdleConnections() }

// ErrConnectsPending is a connect not tried because the backend already has
// Upstream.MaxPendingConnects unproven connections: the request goes to
// another backend and nothing counts against this one.
var ErrConnectsPending = errors.New("backend has too many connects pending")

// dialError marks a failure to connect: nothing was sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// upConn wraps a backend connection to give kelpie two things fasthttp does
// not: per-request facts for error classification (was the connection
// reused, did any response byte arrive) and phase-aware deadlines. fasthttp
// arms one read deadline for the whole response; upConn keeps it only until
// the first response byte, then re-arms it on every read (an idle timeout),
// so long bodies stream while a stalled backend is still cut off. Writes get
// the same rolling treatment. Both deadlines are lazy (conn.go).
//
// A connection is used by one request at a time; the pool's mutex orders
// handovers, so the fields need no locking.
type upConn struct {
	net.Conn
	readIdle, writeIdle time.Duration

	local     *connAddr
	rw        io.ReadWriter // a *rawio.Conn, or the Conn itself
	raw       *rawio.Conn   // the same *rawio.Conn, or nil (std I/O, not TCP)
	pend      []byte        // request bytes written, to be sent by the next Read
	requests  int           // requests started on this connection
	sent      bool          // the current request wrote to the connection
	gotBytes  bool          // a response byte arrived for the current request
	streaming bool          // past the first response byte: rolling read deadline
	armed     bool          // SetWriteDeadline just armed the write deadline
	readArmed time.Time
	writeArm  time.Time
	rd, wd    rawio.Deadline
	// pending is the backend's unproven-connection count while this
	// connection is one of them: released at its first response byte or
	// its close, whichever comes first (Swap: Close may race the read).
	pending atomic.Pointer[atomic.Int32]
	proven  bool // the first response byte arrived (read side only)
}

func newUpConn(c net.Conn, s settings) *upConn {
	u := &upConn{Conn: c, rw: c, readIdle: s.response, writeIdle: s.write}
	if !s.stdIO {
		if r := rawio.New(c); r != nil {
			u.rw, u.raw = r, r
		}
	}
	u.rd.Apply, u.wd.Apply = c.SetReadDeadline, c.SetWriteDeadline
	u.local = &connAddr{Addr: c.LocalAddr(), c: u}
	return u
}

// unpend gives back c's unproven-connection slot, once.
func (c *upConn) unpend() {
	if p := c.pending.Swap(nil); p != nil {
		p.Add(-1)
	}
}

// Close closes the connection and gives back its slot if it never proved.
func (c *upConn) Close() error {
	c.unpend()
	return c.Conn.Close()
}

// connAddr is upConn's LocalAddr: fasthttp copies it into the Response, which
// is how hostTransport.Do finds the connection a failed request ran on.
type connAddr struct {
	net.Addr
	c *upConn
}

// LocalAddr returns the local address, tagged with this connection.
func (c *upConn) LocalAddr() net.Addr { return c.local }

// SetWriteDeadline is called by fasthttp at the start of every request, with
// its clock reading plus the HostClient's WriteTimeout (writeIdle).
func (c *upConn) SetWriteDeadline(t time.Time) error {
	c.requests++
	c.sent = false
	c.gotBytes = false
	c.streaming = false
	c.writeArm = t.Add(-c.writeIdle)
	c.armed = true
	return c.wd.Set(t)
}

// SetReadDeadline is called by fasthttp after the request was written: the
// response timeout starts now.
func (c *upConn) SetReadDeadline(t time.Time) error {
	c.streaming = false
	return c.rd.Set(t)
}

// maxDeferred is how much of a request upConn holds back to send with the
// first read of the response: a whole request head, or the first buffer of
// a body. Anything beyond goes out at once.
const maxDeferred = 16 << 10

// Write holds a request's bytes back, up to maxDeferred, for Read to send:
// sent from inside the read, the request's response is then waited for
// without a read that finds nothing first (rawio.Conn.SendThenRead), one system
// call and one park fewer per request. Larger writes go out at once.
//
// Write also re-arms the write deadline when it is getting old, so that it
// bounds each gap in an upload rather than the whole of it. The first write
// of a request uses the deadline SetWriteDeadline has just set: no clock read.
func (c *upConn) Write(b []byte) (int, error) {
	c.sent = true
	if c.armed {
		c.armed = false
	} else if now := time.Now(); now.Sub(c.writeArm) > c.writeIdle/8 {
		c.writeArm = now
		_ = c.wd.Set(now.Add(c.writeIdle))
	}
	if c.raw != nil && len(c.pend)+len(b) <= maxDeferred {
		c.pend = append(c.pend, b...)
		return len(b), nil
	}
	if len(c.pend) > 0 {
		_, err := c.wd.Write(c.rw, c.pend)
		c.pend = c.pend[:0]
		if err != nil {
			c.closeEarly()
			return 0, err
		}
	}
	n, err := c.wd.Write(c.rw, b)
	if err != nil {
		c.closeEarly()
	}
	return n, err
}

func (c *upConn) Read(b []byte) (int, error) {
	if c.streaming {
		if now := time.Now(); now.Sub(c.readArmed) > c.readIdle/8 {
			c.readArmed = now
			_ = c.rd.Set(now.Add(c.readIdle))
		}
	}
	var n int
	var err error
	if len(c.pend) > 0 {
		var rest []byte
		rest, n, err = c.raw.SendThenRead(c.pend, b)
		c.pend = c.pend[:0]
		switch {
		case len(rest) > 0 && (err == nil || c.rd.Rearm(err)):
			if _, err = c.wd.Write(c.rw, rest); err == nil {
				n, err = c.rd.Read(c.rw, b)
			}
		case n == 0 && err != nil && c.rd.Rearm(err):
			n, err = c.rd.Read(c.rw, b)
		}
	} else {
		n, err = c.rd.Read(c.rw, b)
	}
	if n > 0 && !c.gotBytes {
		// From the first response byte on, the deadline bounds each gap.
		// It is re-armed lazily, at the next read (readArmed is zero), so
		// a response that arrives in one read costs no clock read and no
		// timer change.
		c.gotBytes = true
		c.streaming = true
		c.readArmed = time.Time{}
		if !c.proven {
			c.proven = true
			c.unpend()
		}
	}
	if err != nil {
		c.closeEarly()
	}
	return n, err
}

// closeEarly closes the socket as soon as a read or write fails, before
// fasthttp does: fasthttp gives the connection's slot back first
// (HostClient.CloseConn), so a request waiting for a slot could otherwise
// dial a new connection while this one is still open, one over
// MaxConnsPerBackend at the backend. fasthttp never reuses a connection
// after an error, and its own Close later is harmless.
func (c *upConn) closeEarly() { _ = c.Conn.Close() }
