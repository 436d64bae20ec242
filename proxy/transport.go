package proxy

import (
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// transport is what kelpie stores on a balancer.Backend: the backend's
// fasthttp.HostClient for the current settings. A reload with different
// connection settings swaps in a new client and closes the old one's idle
// connections; one with the same settings keeps the pool warm.
type transport struct {
	cur atomic.Pointer[hostClient]
}

type hostClient struct {
	set  settings
	dial func(string, time.Duration) (net.Conn, error)
	hc   *fasthttp.HostClient
}

// CloseIdleConnections closes the current client's idle connections; the
// pool calls it when the backend leaves.
func (t *transport) CloseIdleConnections() {
	if c := t.cur.Load(); c != nil {
		c.hc.CloseIdleConnections()
	}
}

// client returns the HostClient for b under up's settings.
func client(up *Upstream, b *balancer.Backend) *fasthttp.HostClient {
	t, _ := b.Transport().(*transport)
	if t == nil {
		t, _ = b.LoadOrStoreTransport(&transport{}).(*transport)
		if t == nil { // another package stored something else: never share it
			return newHostClient(up, b.Address()).hc
		}
	}
	set := up.settings()
	for {
		c := t.cur.Load()
		if c != nil && c.set == set && sameDial(c.dial, up.Dial) {
			return c.hc
		}
		n := newHostClient(up, b.Address())
		if t.cur.CompareAndSwap(c, n) {
			if c != nil {
				c.hc.CloseIdleConnections()
			}
			return n.hc
		}
	}
}

// sameDial compares dial hooks by identity of the Upstream's field: both nil,
// or both set (tests set it once per upstream).
func sameDial(a, b func(string, time.Duration) (net.Conn, error)) bool {
	return (a == nil) == (b == nil)
}

func newHostClient(up *Upstream, addr string) *hostClient {
	set := up.settings()
	dial := up.Dial
	if dial == nil {
		dial = newResolver(set.dnsCache).dial // names: resolve.go
	}
	hc := &fasthttp.HostClient{
		Addr: addr,
		Dial: func(addr string) (net.Conn, error) {
			c, err := dial(addr, set.connect)
			if err != nil {
				return nil, &dialError{err}
			}
			return newUpConn(c, set), nil
		},
		MaxConns:                      set.maxConns,
		MaxIdleConnDuration:           set.idle,
		ReadTimeout:                   set.response, // re-armed per phase by upConn
		WriteTimeout:                  set.write,    // marks each request's start for upConn
		MaxIdemponentCallAttempts:     1,
		RetryIfErr:                    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		ConnPoolStrategy:              fasthttp.LIFO,
		DisablePathNormalizing:        true,
		DisableHeaderNamesNormalizing: false,
		NoDefaultUserAgentHeader:      true,
		StreamResponseBody:            true,
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
	}
	return &hostClient{set: set, dial: up.Dial, hc: hc}
}

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
	rw        io.ReadWriter // a *rawIO (rawio_linux.go), or the Conn itself
	raw       *rawIO        // the same *rawIO, or nil
	pend      []byte        // request bytes written, to be sent by the next Read
	requests  int           // requests started on this connection
	gotBytes  bool          // a response byte arrived for the current request
	streaming bool          // past the first response byte: rolling read deadline
	armed     bool          // SetWriteDeadline just armed the write deadline
	readArmed time.Time
	writeArm  time.Time
	rd, wd    lazyDeadline
}

func newUpConn(c net.Conn, s settings) *upConn {
	u := &upConn{Conn: c, rw: c, readIdle: s.response, writeIdle: s.write}
	if r := newRawIO(c); r != nil {
		u.rw, u.raw = r, r
	}
	u.rd.apply, u.wd.apply = c.SetReadDeadline, c.SetWriteDeadline
	u.local = &connAddr{Addr: c.LocalAddr(), c: u}
	return u
}

// connAddr is upConn's LocalAddr: fasthttp copies it into the Response, which
// is how an attempt finds the connection it ran on.
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
	c.gotBytes = false
	c.streaming = false
	c.writeArm = t.Add(-c.writeIdle)
	c.armed = true
	return c.wd.set(t)
}

// SetReadDeadline is called by fasthttp after the request was written: the
// response timeout starts now.
func (c *upConn) SetReadDeadline(t time.Time) error {
	c.streaming = false
	return c.rd.set(t)
}

// maxDeferred is how much of a request upConn holds back to send with the
// first read of the response: a whole request head, or the first buffer of
// a body. Anything beyond goes out at once.
const maxDeferred = 16 << 10

// Write holds a request's bytes back, up to maxDeferred, for Read to send:
// sent from inside the read, the request's response is then waited for
// without a read that finds nothing first (rawIO.sendThenRead), one system
// call and one park fewer per request. Larger writes go out at once.
//
// Write also re-arms the write deadline when it is getting old, so that it
// bounds each gap in an upload rather than the whole of it. The first write
// of a request uses the deadline SetWriteDeadline has just set: no clock read.
func (c *upConn) Write(b []byte) (int, error) {
	if c.armed {
		c.armed = false
	} else if now := time.Now(); now.Sub(c.writeArm) > c.writeIdle/8 {
		c.writeArm = now
		_ = c.wd.set(now.Add(c.writeIdle))
	}
	if c.raw != nil && len(c.pend)+len(b) <= maxDeferred {
		c.pend = append(c.pend, b...)
		return len(b), nil
	}
	if len(c.pend) > 0 {
		_, err := c.wd.write(c.rw, c.pend)
		c.pend = c.pend[:0]
		if err != nil {
			return 0, err
		}
	}
	return c.wd.write(c.rw, b)
}

func (c *upConn) Read(b []byte) (int, error) {
	if c.streaming {
		if now := time.Now(); now.Sub(c.readArmed) > c.readIdle/8 {
			c.readArmed = now
			_ = c.rd.set(now.Add(c.readIdle))
		}
	}
	var n int
	var err error
	if len(c.pend) > 0 {
		var rest []byte
		rest, n, err = c.raw.sendThenRead(c.pend, b)
		c.pend = c.pend[:0]
		switch {
		case len(rest) > 0 && (err == nil || c.rd.rearm(err)):
			if _, err = c.wd.write(c.rw, rest); err == nil {
				n, err = c.rd.read(c.rw, b)
			}
		case n == 0 && err != nil && c.rd.rearm(err):
			n, err = c.rd.read(c.rw, b)
		}
	} else {
		n, err = c.rd.read(c.rw, b)
	}
	if n > 0 && !c.gotBytes {
		// From the first response byte on, the deadline bounds each gap.
		// It is re-armed lazily, at the next read (readArmed is zero), so
		// a response that arrives in one read costs no clock read and no
		// timer change.
		c.gotBytes = true
		c.streaming = true
		c.readArmed = time.Time{}
	}
	return n, err
}
