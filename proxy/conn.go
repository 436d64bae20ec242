package proxy

import (
	"errors"
	"net"
	"os"
	"runtime"
	"time"
)

// Two things here make each proxied request cheaper on both of kelpie's
// connections (the client's and the backend's); bench/README.md has the
// measurements.
//
// Lazy deadlines. fasthttp moves a connection's read deadline two or three
// times per request (idle wait, then read timeout; response timeout), and
// every move is a runtime timer update under the poller's lock. A deadline
// that only moves later does not need the timer moved: lazyDeadline keeps the
// armed one, which fires no later than the one asked for, and when it fires
// early the read (or write) re-arms it to the deadline asked for and carries
// on. The timer is then touched about once per timeout period per connection
// instead of several times per request, and a deadline still cuts a read off
// at the time asked for.
//
// Yielding before a read that would likely find nothing. After kelpie writes
// a request upstream, the backend has not answered yet; after it writes a
// response, the client has not sent its next request yet. Go's netpoller
// reads first and parks only on EAGAIN, so each of those reads is a wasted
// system call plus a park. Yielding the processor first lets the other ready
// connections run; when this goroutine comes back the bytes are usually
// there. With nothing else ready (a quiet proxy) the yield returns at once.

// lazyDeadline is one direction's deadline on a connection. A connection is
// used by one goroutine at a time per direction (fasthttp's model), so it
// needs no locking.
type lazyDeadline struct {
	want  time.Time // the deadline asked for; zero: none
	armed time.Time // the deadline set on the socket; zero: none
}

// set records t as the deadline and reports whether the socket's deadline
// must move now: when t is earlier than the armed one, or none is armed.
// Otherwise the armed deadline fires first and retry re-arms it.
func (d *lazyDeadline) set(t time.Time) bool {
	d.want = t
	if t.IsZero() || (!d.armed.IsZero() && !t.Before(d.armed)) {
		return false
	}
	d.armed = t
	return true
}

// early reports whether err is the armed deadline firing before the one asked
// for; the caller then re-arms the socket to d.want and retries.
func (d *lazyDeadline) early(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if !d.want.IsZero() && !time.Now().Before(d.want) {
		return false // the real deadline
	}
	d.armed = d.want
	return true
}

// clientConn is a client connection as kelpie's fasthttp server sees it: lazy
// read deadlines, and a yield before the first read after a response.
// Writes and write deadlines pass through.
type clientConn struct {
	net.Conn
	rd    lazyDeadline
	yield bool // a response was written: the next request is not here yet
}

// SetDeadline sets both deadlines; the read one lazily.
func (c *clientConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// SetReadDeadline moves the socket's read deadline only when t is earlier
// than the armed one.
func (c *clientConn) SetReadDeadline(t time.Time) error {
	if c.rd.set(t) {
		return c.Conn.SetReadDeadline(t)
	}
	return nil
}

func (c *clientConn) Read(b []byte) (int, error) {
	if c.yield {
		c.yield = false
		runtime.Gosched()
	}
	for {
		n, err := c.Conn.Read(b)
		if n > 0 || err == nil || !c.rd.early(err) {
			return n, err
		}
		if err := c.Conn.SetReadDeadline(c.rd.want); err != nil {
			return 0, err
		}
	}
}

func (c *clientConn) Write(b []byte) (int, error) {
	c.yield = true
	return c.Conn.Write(b)
}

// listener hands fasthttp's server clientConns.
type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &clientConn{Conn: c}, nil
}
