package proxy

import (
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/proxy/internal/rawio"
)

// clientConn is a client connection as kelpie's fasthttp server sees it: its
// deadlines are lazy (rawio.Deadline), and in raw I/O mode it reads and
// writes with raw system calls where it can (rawio.Conn). fasthttp moves the write deadline before every
// response, and kelpie's streamed bodies keep it rolling; lazily, neither
// touches the socket's timer while the armed deadline is still ahead.
//
// It also runs the head scan (headscan.go) over everything the client sends,
// so it must wrap the plaintext stream: above TLS, never beneath it. The scan
// knows where each request's body is, so clientConn is where kelpie decides
// that the client's stream ended inside a request (bodyErr).
type clientConn struct {
	net.Conn
	rw     io.ReadWriter // a *rawio.Conn, or the Conn itself
	rd, wd rawio.Deadline
	scan   headScan
	// The stream's end: the first read error (a close inside a request as
	// io.ErrUnexpectedEOF, a reset, a timeout) or the scan's refusal
	// (errBareLF, sticky); and the request (ConnRequestNum) whose body the
	// scan was in then, 0 for a head or between requests. Used by the
	// connection's goroutine only.
	rerr    error
	rerrReq int

	// Parking (idle.go), on a plain TCP connection kelpie's listener
	// accepted: nil idler otherwise.
	idler      *idler
	prev, next *clientConn   // the idler's list, under its lock
	listed     bool          // on that list, under its lock
	resumed    bool          // served again after being parked
	idleAt     atomic.Uint32 // the idler's tick when a wait for a request began; 0: not waiting
	parking    atomic.Bool   // readIdle ended the connection idle: Close parks it
}

// newClientConn wraps c; with raw set (IORaw) it reads and writes c with
// raw system calls when c is a TCP connection.
func newClientConn(c net.Conn, raw bool) *clientConn {
	cc := &clientConn{Conn: c, rw: c, scan: newHeadScan()}
	cc.rd.Apply, cc.wd.Apply = c.SetReadDeadline, c.SetWriteDeadline
	if raw {
		if s, ok := c.(*rawio.Sock); ok {
			cc.rw = s.Raw()
		} else if r := rawio.New(c); r != nil {
			cc.rw = r
		}
	}
	return cc
}

// SetDeadline sets both deadlines, lazily.
func (c *clientConn) SetDeadline(t time.Time) error {
	if err := c.rd.Set(t); err != nil {
		return err
	}
	return c.wd.Set(t)
}

// SetReadDeadline moves the socket's read deadline only when t is earlier
// than the armed one.
func (c *clientConn) SetReadDeadline(t time.Time) error { return c.rd.Set(t) }

// SetWriteDeadline moves the socket's write deadline only when t is earlier
// than the armed one.
func (c *clientConn) SetWriteDeadline(t time.Time) error { return c.wd.Set(t) }

func (c *clientConn) Write(b []byte) (int, error) { return c.wd.Write(c.rw, b) }

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
	var n int
	var err error
	if c.waitsIdle() {
		n, err = c.readIdle(b)
	} else {
		n, err = c.rd.Read(c.rw, b)
	}
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

// leaveHTTP stops the head scan for good: the connection is about to carry
// another protocol (an upgrade's tunnel), whose bytes are not HTTP framing;
// a WebSocket frame holds bare LFs as often as not. Called by the
// connection's goroutine before it hands the connection over. It reports
// whether nothing came after the last request: then fasthttp's reader holds
// no byte, and the tunnel may read the socket itself from the start.
func (c *clientConn) leaveHTTP() (nothingAfter bool) {
	nothingAfter = c.scan.atBoundary()
	c.scan.state = scanOff
	if c.idler != nil {
		c.idler.forget(c)
	}
	return nothingAfter
}

// rawRead reports whether c reads its socket with raw system calls.
func (c *clientConn) rawRead() bool {
	_, ok := c.rw.(*rawio.Conn)
	return ok
}

// readPooled is Read for a tunnel (the head scan is off by then) into a
// buffer from get taken only when bytes are there (rawio.Conn.ReadPooled),
// with the same lazy read deadline. Only when rawRead.
func (c *clientConn) readPooled(get func() []byte, put func([]byte)) ([]byte, int, error) {
	r := c.rw.(*rawio.Conn)
	for {
		buf, n, err := r.ReadPooled(get, put)
		if n > 0 || err == nil || !c.rd.Rearm(err) {
			return buf, n, err
		}
		put(buf)
	}
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

// listener hands fasthttp's server clientConns, raw or not (Options.IO).
type listener struct {
	net.Listener
	raw bool
}

func (l listener) Accept() (net.Conn, error) {
	c, err := l.accept()
	if err != nil {
		return nil, err
	}
	return newClientConn(c, l.raw), nil
}

// accept is the listener's next connection; with io: std a Sock from
// kelpie's own accept becomes net's TCPConn.
func (l listener) accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		s, ok := c.(*rawio.Sock)
		if !ok || l.raw {
			return c, nil
		}
		if tc, err := s.TCPConn(); err == nil {
			return tc, nil
		}
	}
}
