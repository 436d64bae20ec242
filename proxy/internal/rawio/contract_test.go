package rawio

// Contract tests: each pins one assumption of doc.go's list against the
// fasthttp in go.mod, and names it when it fails. They drive fasthttp over
// real loopback sockets wrapped in a recording net.Conn.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

const fasthttpPath = "github.com/valyala/fasthttp"

// broken fails t naming assumption n of doc.go.
func broken(t *testing.T, n int, what string, format string, args ...any) {
	t.Helper()
	v, err := fasthttpVersion()
	if err != nil {
		v = "(" + err.Error() + ")"
	}
	t.Fatalf("fasthttp %s breaks rawio assumption %d (%s), relied on by proxy: %s; see proxy/internal/rawio/doc.go",
		v, n, what, fmt.Sprintf(format, args...))
}

// fasthttpVersion is the fasthttp version go.mod requires: the one the
// tests are built with (test binaries carry no dependency list to ask).
func fasthttpVersion() (string, error) {
	mod, err := os.ReadFile("../../../go.mod")
	if err != nil {
		return "", fmt.Errorf("read go.mod: %w", err)
	}
	version := ""
	for _, line := range strings.Split(string(mod), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		switch {
		case len(f) >= 2 && f[0] == fasthttpPath:
			version = f[1]
		case strings.Contains(line, "=>") && strings.Contains(line, fasthttpPath):
			return "", fmt.Errorf("go.mod replaces %s: %q", fasthttpPath, strings.TrimSpace(line))
		}
	}
	if version == "" {
		return "", fmt.Errorf("go.mod does not require %s", fasthttpPath)
	}
	return version, nil
}

// An upgrade of fasthttp must come with a review of doc.go's list: the
// contract tests below pass or fail against it, and CheckedFasthttp moves.
func TestContractFasthttpVersion(t *testing.T) {
	v, err := fasthttpVersion()
	if err != nil {
		t.Fatalf("cannot tell which fasthttp rawio's assumptions are checked against: %v", err)
	}
	if v != CheckedFasthttp {
		t.Fatalf("fasthttp is %s, but rawio's assumptions about its internals were checked against %s: "+
			"run this package's contract tests, review the list in proxy/internal/rawio/doc.go, "+
			"then set CheckedFasthttp to %s", v, CheckedFasthttp, v)
	}
}

// event is one call on a recordedConn.
type event struct {
	op   string        // "SetReadDeadline", "SetWriteDeadline", "Read", "Write"
	in   time.Duration // deadlines: how far ahead of the call
	n    int           // Read, Write: bytes
	when time.Time
}

// recordedConn logs the calls fasthttp makes on a connection and notes any
// overlap of two Reads or two Writes (assumption 7).
type recordedConn struct {
	net.Conn
	local    net.Addr
	mu       sync.Mutex
	events   []event
	readers  atomic.Int32
	writers  atomic.Int32
	overlaps atomic.Int32
}

func newRecordedConn(c net.Conn) *recordedConn {
	return &recordedConn{Conn: c, local: &taggedAddr{c.LocalAddr()}}
}

// taggedAddr is a LocalAddr only this connection returns.
type taggedAddr struct{ net.Addr }

func (c *recordedConn) LocalAddr() net.Addr { return c.local }

func (c *recordedConn) log(e event) {
	e.when = time.Now()
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
}

func (c *recordedConn) snapshot() []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event(nil), c.events...)
}

func (c *recordedConn) SetReadDeadline(t time.Time) error {
	c.log(event{op: "SetReadDeadline", in: time.Until(t)})
	return c.Conn.SetReadDeadline(t)
}

func (c *recordedConn) SetWriteDeadline(t time.Time) error {
	c.log(event{op: "SetWriteDeadline", in: time.Until(t)})
	return c.Conn.SetWriteDeadline(t)
}

func (c *recordedConn) Read(b []byte) (int, error) {
	if c.readers.Add(1) > 1 {
		c.overlaps.Add(1)
	}
	defer c.readers.Add(-1)
	n, err := c.Conn.Read(b)
	c.log(event{op: "Read", n: n})
	return n, err
}

func (c *recordedConn) Write(b []byte) (int, error) {
	if c.writers.Add(1) > 1 {
		c.overlaps.Add(1)
	}
	defer c.writers.Add(-1)
	c.log(event{op: "Write", n: len(b)})
	return c.Conn.Write(b)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serve runs s on ln until the test ends.
func serve(t *testing.T, s *fasthttp.Server, ln net.Listener) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = s.Shutdown()
		<-done
	})
}

// hostClient is a HostClient set up as proxy's hostTransport sets it up,
// dialling through record.
func hostClient(addr string, record func(*recordedConn)) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr: addr,
		Dial: func(addr string) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return nil, err
			}
			rc := newRecordedConn(c)
			record(rc)
			return rc, nil
		},
		MaxConns:                      1,
		ReadTimeout:                   7 * time.Second,
		WriteTimeout:                  3 * time.Second,
		MaxIdemponentCallAttempts:     1,
		RetryIfErr:                    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		ConnPoolStrategy:              fasthttp.LIFO,
		DisablePathNormalizing:        true,
		DisableHeaderNamesNormalizing: true,
		NoDefaultUserAgentHeader:      true,
		StreamResponseBody:            true,
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
	}
}

// Assumption 1: Response.LocalAddr is the request's connection's LocalAddr,
// also when the request failed.
func TestContractResponseLocalAddrNamesTheConnection(t *testing.T) {
	ln := listen(t)
	go func() { // a backend that reads a request head and hangs up
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
	}()
	var conn *recordedConn
	hc := hostClient(ln.Addr().String(), func(c *recordedConn) { conn = c })
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + ln.Addr().String() + "/")
	if err := hc.Do(req, resp); err == nil {
		t.Fatal("the backend hung up, yet Do succeeded: the test's premise is gone")
	}
	if conn == nil {
		t.Fatal("Do failed without dialling")
	}
	if got := resp.LocalAddr(); got != conn.local {
		broken(t, 1, "Response.LocalAddr names the connection after a failed request",
			"Response.LocalAddr() is %#v, want the connection's own LocalAddr %p", got, conn.local)
	}
}

// Assumptions 2, 3 and 7 on the client side: per request, SetWriteDeadline
// (now + WriteTimeout) before the first Write, then SetReadDeadline (now +
// ReadTimeout) after the last Write and before the first Read; never two
// Reads or two Writes at once.
func TestContractHostClientDeadlinesFrameEachRequest(t *testing.T) {
	ln := listen(t)
	serve(t, &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetBody(bytes.Repeat([]byte("r"), len(ctx.PostBody())%1000+1))
	}}, ln)
	var conn *recordedConn
	hc := hostClient(ln.Addr().String(), func(c *recordedConn) { conn = c })
	// Small and large bodies: a large one takes several Writes.
	bodies := []int{0, 100, 200 << 10, 10, 64 << 10}
	for i, size := range bodies {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(fmt.Sprintf("http://%s/%d", ln.Addr(), i))
		if size > 0 {
			req.Header.SetMethod("POST")
			req.SetBody(bytes.Repeat([]byte("b"), size))
		}
		if err := hc.Do(req, resp); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if s := resp.BodyStream(); s != nil {
			if _, err := io.Copy(io.Discard, s); err != nil {
				t.Fatalf("request %d body: %v", i, err)
			}
		}
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	if conn == nil {
		t.Fatal("no connection dialled")
	}
	evs := conn.snapshot()
	// Split the log into requests at each SetWriteDeadline.
	var reqs [][]event
	for i, e := range evs {
		if e.op == "SetWriteDeadline" {
			reqs = append(reqs, nil)
		} else if len(reqs) == 0 {
			broken(t, 2, "SetWriteDeadline starts every request", "event %d (%s) came before any SetWriteDeadline", i, e.op)
		}
		reqs[len(reqs)-1] = append(reqs[len(reqs)-1], e)
	}
	if len(reqs) != len(bodies) {
		broken(t, 2, "SetWriteDeadline is called once per request", "%d requests on one connection, %d SetWriteDeadline calls: %s",
			len(bodies), len(reqs), ops(evs))
	}
	for i, r := range reqs {
		if w := r[0].in; w > 3*time.Second || w < 2*time.Second {
			broken(t, 2, "the write deadline is the clock plus WriteTimeout", "request %d: deadline %v ahead, want just under 3s", i, w)
		}
		var writes, reads, setReads int
		for _, e := range r[1:] {
			switch e.op {
			case "Write":
				if setReads > 0 {
					broken(t, 3, "SetReadDeadline comes after the whole request is written", "request %d: %s", i, ops(r))
				}
				writes++
			case "SetReadDeadline":
				if writes == 0 || reads > 0 {
					broken(t, 3, "SetReadDeadline comes after the request's Writes and before the response's first Read", "request %d: %s", i, ops(r))
				}
				if e.in > 7*time.Second || e.in < 6*time.Second {
					broken(t, 3, "the read deadline is the clock plus ReadTimeout", "request %d: deadline %v ahead, want just under 7s", i, e.in)
				}
				setReads++
			case "Read":
				if setReads == 0 {
					broken(t, 3, "SetReadDeadline comes before the response's first Read", "request %d: %s", i, ops(r))
				}
				reads++
			}
		}
		if setReads != 1 || reads == 0 {
			broken(t, 3, "SetReadDeadline is called once per request, then the response is read", "request %d: %s", i, ops(r))
		}
	}
	if n := conn.overlaps.Load(); n > 0 {
		broken(t, 7, "one reader and one writer at a time", "%d overlapping Reads or Writes on a backend connection", n)
	}
}

// ops is a compact account of a call log, for failure messages.
func ops(evs []event) string {
	var b strings.Builder
	for _, e := range evs {
		b.WriteString(strings.TrimPrefix(e.op, "Set"))
		if e.n > 0 {
			fmt.Fprintf(&b, "(%d)", e.n)
		}
		b.WriteByte(' ')
	}
	return b.String()
}

// recordingListener hands the server recordedConns; failRead, when set,
// makes every Read after the first that returned bytes fail with it.
type recordingListener struct {
	net.Listener
	failRead error
	conns    chan *recordedConn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := newRecordedConn(c)
	l.conns <- rc
	if l.failRead != nil {
		return &failingConn{recordedConn: rc, err: l.failRead}, nil
	}
	return rc, nil
}

type failingConn struct {
	*recordedConn
	err  error
	read bool
}

func (c *failingConn) Read(b []byte) (int, error) {
	if c.read {
		return 0, c.err
	}
	n, err := c.recordedConn.Read(b)
	c.read = n > 0
	return n, err
}

// server is a Server set up as proxy's is, on a recordingListener.
func server(t *testing.T, h fasthttp.RequestHandler, eh func(*fasthttp.RequestCtx, error), failRead error) (addr string, conns <-chan *recordedConn) {
	ln := &recordingListener{Listener: listen(t), failRead: failRead, conns: make(chan *recordedConn, 16)}
	serve(t, &fasthttp.Server{
		Handler:                       h,
		ErrorHandler:                  eh,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		ReadTimeout:                   5 * time.Second,
		IdleTimeout:                   5 * time.Second,
		MaxRequestBodySize:            4 << 10,
		StreamRequestBody:             true,
		DisablePreParseMultipartForm:  true,
		LazyRequestTime:               true,
		DisableHeaderNamesNormalizing: true,
		Logger:                        quiet{},
	}, ln)
	return ln.Addr().String(), ln.conns
}

// dialSend writes raw to addr and returns everything read until the server
// closes or 5s pass.
func dialSend(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	got, _ := io.ReadAll(c)
	return string(got)
}

// Assumptions 4, 6 and 7 on the server side: RequestCtx.Conn is the
// accepted conn, ConnRequestNum counts from 1, and Reads and Writes never
// overlap, with pipelined requests and a streamed body.
func TestContractServerConnAndRequestNumbers(t *testing.T) {
	type seen struct {
		conn net.Conn
		num  uint64
		body string
	}
	got := make(chan seen, 8)
	addr, conns := server(t, func(ctx *fasthttp.RequestCtx) {
		var body []byte
		if s := ctx.RequestBodyStream(); s != nil {
			body, _ = io.ReadAll(s)
		} else {
			body = ctx.PostBody()
		}
		got <- seen{ctx.Conn(), ctx.ConnRequestNum(), string(body)}
		ctx.SetBodyString("ok")
	}, nil, nil)
	big := strings.Repeat("x", 20<<10) // past MaxRequestBodySize: streamed
	out := dialSend(t, addr, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"+
		"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"+
		"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big)+
		"GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	if n := strings.Count(out, "HTTP/1.1 200"); n != 4 {
		t.Fatalf("4 requests, %d answered 200: %q", n, out)
	}
	rc := <-conns
	for i, body := range []string{"", "hello", big, ""} {
		s := <-got
		if s.conn != net.Conn(rc) {
			broken(t, 4, "RequestCtx.Conn is the conn the Listener returned", "request %d: Conn() is %T, not the accepted %T", i+1, s.conn, rc)
		}
		if s.num != uint64(i+1) {
			broken(t, 6, "ConnRequestNum counts a connection's requests from 1", "request %d: ConnRequestNum %d", i+1, s.num)
		}
		if s.body != body {
			t.Fatalf("request %d: body of %d bytes, want %d", i+1, len(s.body), len(body))
		}
	}
	if n := rc.overlaps.Load(); n > 0 {
		broken(t, 7, "one reader and one writer at a time", "%d overlapping Reads or Writes on a client connection", n)
	}
}

// Assumption 5: a Read error inside a request head reaches ErrorHandler,
// findable with errors.Is.
func TestContractServerHeadReadErrorReachesErrorHandler(t *testing.T) {
	errMarked := errors.New("rawio contract: refused head line")
	got := make(chan error, 1)
	addr, _ := server(t, func(ctx *fasthttp.RequestCtx) {
		got <- nil
	}, func(ctx *fasthttp.RequestCtx, err error) {
		got <- err
		ctx.Error("refused", fasthttp.StatusBadRequest)
	}, errMarked)
	out := dialSend(t, addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Partial: ")
	var err error
	select {
	case err = <-got:
	case <-time.After(5 * time.Second):
		broken(t, 5, "a head Read error reaches ErrorHandler", "ErrorHandler not called within 5s; client got %q", out)
	}
	if !errors.Is(err, errMarked) {
		broken(t, 5, "a head Read error reaches ErrorHandler", "ErrorHandler got %v, which does not wrap the Read's error", err)
	}
	if !strings.HasPrefix(out, "HTTP/1.1 400") {
		broken(t, 5, "ErrorHandler's answer reaches the client", "client got %q", out)
	}
}

// quiet drops fasthttp's log lines: the tests check what they mean.
type quiet struct{}

func (quiet) Printf(string, ...any) {}

// tlsLike has the two methods fasthttp looks for on a TLS connection.
type tlsLike struct{ net.Conn }

func (tlsLike) Handshake() error { return nil }
func (tlsLike) ConnectionState() tls.ConnectionState {
	return tls.ConnectionState{ServerName: "rawio.contract"}
}

type tlsLikeListener struct{ net.Listener }

func (l tlsLikeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tlsLike{c}, nil
}

// Assumption 8: a connection with Handshake and ConnectionState is TLS to
// fasthttp, whatever its type.
func TestContractServerTLSByMethods(t *testing.T) {
	type seen struct {
		isTLS bool
		sni   string
	}
	got := make(chan seen, 1)
	ln := listen(t)
	serve(t, &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		s := seen{isTLS: ctx.IsTLS()}
		if st := ctx.TLSConnectionState(); st != nil {
			s.sni = st.ServerName
		}
		got <- s
	}, Logger: quiet{}}, tlsLikeListener{ln})
	if out := dialSend(t, ln.Addr().String(), "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("response %q", out)
	}
	if s := <-got; !s.isTLS || s.sni != "rawio.contract" {
		broken(t, 8, "a conn with Handshake and ConnectionState is TLS", "IsTLS %v, TLSConnectionState().ServerName %q", s.isTLS, s.sni)
	}
}
