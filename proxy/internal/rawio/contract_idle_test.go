package rawio

// Assumption 9's contract test (contract_test.go has the others).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// idleEOFConn reports io.EOF, with the socket still open, once it has
// delivered limit bytes: a connection "idle at a request boundary", as
// proxy's clientConn reports one to park it. Its Close hands the socket on
// instead of closing it.
type idleEOFConn struct {
	net.Conn
	limit  int
	closed chan net.Conn
}

func (c *idleEOFConn) Read(b []byte) (int, error) {
	if c.limit <= 0 {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(b[:min(len(b), c.limit)])
	c.limit -= n
	return n, err
}

func (c *idleEOFConn) Close() error {
	c.closed <- c.Conn
	return nil
}

type idleEOFListener struct {
	net.Listener
	limit  int
	closed chan net.Conn
}

func (l idleEOFListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &idleEOFConn{Conn: c, limit: l.limit, closed: l.closed}, nil
}

// Assumption 9: io.EOF from the Read that waits for the next request ends
// the connection's serving quietly (no response) with one Close, and
// Server.ServeConn serves the same socket anew, ConnRequestNum from 1.
func TestContractServerIdleEOFAndServeConnAnew(t *testing.T) {
	req := "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	closed := make(chan net.Conn, 4)
	ln := idleEOFListener{Listener: listen(t), limit: len(req), closed: closed}
	s := &fasthttp.Server{
		Handler:               func(ctx *fasthttp.RequestCtx) { fmt.Fprintf(ctx, "%d", ctx.ConnRequestNum()) },
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		NoDefaultDate:         true,
		ReadTimeout:           5 * time.Second,
		IdleTimeout:           5 * time.Second,
		StreamRequestBody:     true,
		LazyRequestTime:       true,
		Logger:                quiet{},
	}
	serve(t, s, ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	var resp fasthttp.Response
	io.WriteString(c, req)
	if err := resp.Read(br); err != nil || string(resp.Body()) != "1" {
		t.Fatalf("first request: %q %v", resp.Body(), err)
	}
	var sock net.Conn
	select {
	case sock = <-closed:
	case <-time.After(5 * time.Second):
		broken(t, 9, "io.EOF between requests ends serving", "the server did not close the connection after the idle EOF")
	}
	select {
	case <-closed:
		broken(t, 9, "io.EOF between requests ends serving", "Close called twice")
	default:
	}
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if b, err := br.ReadByte(); err == nil {
		broken(t, 9, "io.EOF between requests ends serving quietly", "the server wrote %q after the idle EOF", b)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(&idleEOFConn{Conn: sock, limit: len(req), closed: closed}) }()
	io.WriteString(c, req)
	if err := resp.Read(br); err != nil {
		broken(t, 9, "ServeConn serves the socket anew", "second request: %v", err)
	}
	if string(resp.Body()) != "1" {
		broken(t, 9, "ServeConn counts requests from 1 again", "ConnRequestNum %s on the socket served anew", resp.Body())
	}
	if err := <-served; err != nil {
		broken(t, 9, "ServeConn ends quietly at the idle EOF", "ServeConn: %v", err)
	}
	(<-closed).Close()
}
