package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

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
// Not done, on measurement (bench/README.md): yielding the processor before a
// read that will likely find nothing (the response just after the request
// was written, the next request just after a response) saves Go's
// read-EAGAIN-park round trip, but starves the netpoller under load: the p99
// at saturation doubled.

// lazyDeadline is one direction's deadline on a connection. A connection is
// used by one goroutine at a time per direction (fasthttp's model), so it
// needs no locking.
type lazyDeadline struct {
	want  time.Time             // the deadline asked for; zero: none
	armed time.Time             // the deadline set on the socket; zero: none
	apply func(time.Time) error // the socket's SetReadDeadline or SetWriteDeadline
}

// set records t as the deadline. The socket's moves only when t is earlier
// than the armed one, or none is armed; otherwise the armed one fires first
// and rearm moves it on.
func (d *lazyDeadline) set(t time.Time) error {
	d.want = t
	if t.IsZero() || (!d.armed.IsZero() && !t.Before(d.armed)) {
		return nil
	}
	d.armed = t
	return d.apply(t)
}

// rearm reports whether err is the armed deadline firing before the one asked
// for, and if so arms the one asked for: the caller retries its read or write.
func (d *lazyDeadline) rearm(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if !d.want.IsZero() && !time.Now().Before(d.want) {
		return false // the real deadline
	}
	d.armed = d.want
	return d.apply(d.want) == nil
}

// read reads from r into b; when the armed deadline fires before the one
// asked for, it re-arms it and reads again.
func (d *lazyDeadline) read(r io.Reader, b []byte) (int, error) {
	for {
		n, err := r.Read(b)
		if n > 0 || err == nil || !d.rearm(err) {
			return n, err
		}
	}
}

// write writes all of b to w; when the armed deadline fires before the one
// asked for, it re-arms it and writes the rest.
func (d *lazyDeadline) write(w io.Writer, b []byte) (int, error) {
	n, err := w.Write(b)
	for n < len(b) && err != nil && d.rearm(err) {
		var m int
		m, err = w.Write(b[n:])
		n += m
	}
	return n, err
}

// clientConn is a client connection as kelpie's fasthttp server sees it: its
// deadlines are lazy, and it reads and writes with raw system calls where it
// can (rawio_linux.go). fasthttp moves the write deadline before every
// response, and kelpie's streamed bodies keep it rolling; lazily, neither
// touches the socket's timer while the armed deadline is still ahead.
//
// It also runs the head scan (headscan.go) over everything the client sends,
// so it must wrap the plaintext stream: above TLS, never beneath it. The scan
// knows where each request's body is, so clientConn is where kelpie decides
// that the client's stream ended inside a request (bodyErr).
type clientConn struct {
	net.Conn
	rw     io.ReadWriter // a *rawIO, or the Conn itself
	rd, wd lazyDeadline
	scan   headScan
	// The stream's end: the first read error (a close inside a request as
	// io.ErrUnexpectedEOF, a reset, a timeout) or the scan's refusal
	// (errBareLF, sticky); and the request (ConnRequestNum) whose body the
	// scan was in then, 0 for a head or between requests. Used by the
	// connection's goroutine only.
	rerr    error
	rerrReq int
}

func newClientConn(c net.Conn) *clientConn {
	cc := &clientConn{Conn: c, rw: c, scan: newHeadScan()}
	cc.rd.apply, cc.wd.apply = c.SetReadDeadline, c.SetWriteDeadline
	if r := newRawIO(c); r != nil {
		cc.rw = r
	}
	return cc
}

// SetDeadline sets both deadlines, lazily.
func (c *clientConn) SetDeadline(t time.Time) error {
	if err := c.rd.set(t); err != nil {
		return err
	}
	return c.wd.set(t)
}

// SetReadDeadline moves the socket's read deadline only when t is earlier
// than the armed one.
func (c *clientConn) SetReadDeadline(t time.Time) error { return c.rd.set(t) }

// SetWriteDeadline moves the socket's write deadline only when t is earlier
// than the armed one.
func (c *clientConn) SetWriteDeadline(t time.Time) error { return c.wd.set(t) }

func (c *clientConn) Write(b []byte) (int, error) { return c.wd.write(c.rw, b) }

// Read reads from the client. Bytes up to a bare LF in a request head are
// returned; from then on every Read returns errBareLF, which fasthttp passes
// to parseError as the reason its header read failed. The end of the stream
// in the middle of a request is io.ErrUnexpectedEOF: fasthttp's chunked
// reader takes a plain io.EOF at a chunk boundary for the end of the body,
// and would have kelpie forward a truncated upload as a complete one. The
// first read error is kept for bodyErr.
func (c *clientConn) Read(b []byte) (int, error) {
	if c.rerr == errBareLF {
		return 0, c.rerr
	}
	n, err := c.rd.read(c.rw, b)
	if n > 0 && c.scan.state != scanOff {
		var serr error
		if n, serr = c.scan.scan(b[:n]); serr != nil {
			c.rerr, c.rerrReq = serr, c.scan.inBody()
			if n == 0 {
				return 0, serr
			}
			return n, nil
		}
	}
	if err != nil {
		if err == io.EOF && c.scan.midRequest() {
			err = io.ErrUnexpectedEOF
		}
		if c.rerr == nil {
			c.rerr, c.rerrReq = err, c.scan.inBody()
		}
	}
	return n, err
}

// bodyErr is why request n's (ConnRequestNum) body cannot be whole, as far
// as the client's stream shows: the stream ended inside that body (closed or
// half-closed: io.ErrUnexpectedEOF; reset; timed out), or the head scan
// refused a line in it (errBareLF). nil when neither, or when it happened
// outside that body. reqBody asks at every end of a body: fasthttp's
// chunked reader takes a trailer section it could not read for the end.
func (c *clientConn) bodyErr(n int) error {
	if c.rerr != nil && c.rerrReq == n {
		return c.rerr
	}
	return nil
}

// clientConnOf returns the clientConn under a connection fasthttp serves,
// plain or TLS, or nil for a connection kelpie's listeners did not wrap.
func clientConnOf(c net.Conn) *clientConn {
	switch c := c.(type) {
	case *clientConn:
		return c
	case *tlsClientConn:
		return c.clientConn
	}
	return nil
}

// listener hands fasthttp's server clientConns.
type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newClientConn(c), nil
}
