package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// received is what a recording backend saw on one connection.
type received struct {
	data     []byte // every byte read
	complete bool   // a whole request (head and framed body) was parsed
	closed   bool   // the connection ended (EOF or reset) while a request was unfinished
}

// recordingBackend parses one request per raw connection and reports what
// it read: at once when the request is whole (then it answers 200), or when
// the connection ends first.
func recordingBackend(t *testing.T) (addr string, conns <-chan received) {
	t.Helper()
	ch := make(chan received, 16)
	rb := startRawBackend(t, func(_ *rawBackend, c net.Conn, _ *bufio.Reader) {
		var seen bytes.Buffer
		var req fasthttp.Request
		err := req.Read(bufio.NewReader(io.TeeReader(c, &seen)))
		ch <- received{data: seen.Bytes(), complete: err == nil, closed: err != nil}
		if err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			io.Copy(io.Discard, c) // until kelpie closes its idle connection
		}
	})
	return rb.addr, ch
}

// proxyNotifying starts a proxy with one catch-all route to up that
// signals on closed each time it has closed a client connection (its
// handler, and so every attempt but a streamed one, has returned by then).
func proxyNotifying(t *testing.T, up *Upstream, o Options) (addr string, closed <-chan struct{}) {
	t.Helper()
	p, err := New(withTestIO(o), []Route{{Upstream: up}})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 1)
	p.server.ConnState = func(_ net.Conn, s fasthttp.ConnState) {
		if s == fasthttp.StateClosed {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	return serveProxy(t, p).addr, ch
}

// chunks is a chunked body of n chunks of size bytes each, without the last
// chunk.
func chunks(n, size int) string {
	var b strings.Builder
	for range n {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", size, strings.Repeat("x", size))
	}
	return b.String()
}

// TestTruncatedUploadNeverLooksComplete: a request body the client ends
// early (close, half-close, stall, reset) never reaches the backend as a
// complete message: kelpie sends no terminating chunk of its own and closes
// the upstream connection, answers the client 400 or 408 if it still
// listens, and counts nothing against the backend.
func TestTruncatedUploadNeverLooksComplete(t *testing.T) {
	const big = 160 << 10 // beyond fasthttp's 64 KiB prefetch and kelpie's 4 KiB read-ahead
	chunkedHead := "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	clHead := func(n int) string {
		return fmt.Sprintf("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", n)
	}
	type ending int
	const (
		closeAll  ending = iota // close the connection
		halfClose               // shut down writing, read the answer
		stall                   // stop sending, read the answer
		reset                   // abort with RST
	)
	cases := []struct {
		name     string
		send     string
		end      ending
		upstream bool // kelpie had started the upstream request
		status   int  // what a listening client gets
		complete bool // control cases: a whole body goes through
	}{
		{"chunked whole (control)", chunkedHead + chunks(3, 5) + "0\r\n\r\n", halfClose, true, 200, true},
		{"content-length whole (control)", clHead(big) + strings.Repeat("y", big), halfClose, true, 200, true},

		// A chunked body's first 4 KiB is read before anything goes
		// upstream: these small ones are refused before a connection opens.
		{"chunked, head only, close", chunkedHead, closeAll, false, 0, false},
		{"chunked, head only, half-close", chunkedHead, halfClose, false, 400, false},
		{"chunked, at a chunk boundary, close", chunkedHead + chunks(1, 5), closeAll, false, 0, false},
		{"chunked, at a chunk boundary, half-close", chunkedHead + chunks(1, 5), halfClose, false, 400, false},
		{"chunked, inside a chunk, half-close", chunkedHead + "a\r\nhel", halfClose, false, 400, false},
		{"chunked, inside a chunk size line, half-close", chunkedHead + chunks(1, 5) + "1", halfClose, false, 400, false},
		{"chunked, after 0 CRLF without the final CRLF, close", chunkedHead + chunks(1, 5) + "0\r\n", closeAll, false, 0, false},
		{"chunked, after 0 CRLF without the final CRLF, half-close", chunkedHead + chunks(1, 5) + "0\r\n", halfClose, false, 400, false},
		{"chunked, 160 KiB at a chunk boundary, close", chunkedHead + chunks(10, 16<<10), closeAll, true, 0, false},
		{"chunked, 160 KiB at a chunk boundary, half-close", chunkedHead + chunks(10, 16<<10), halfClose, true, 400, false},
		{"chunked, 160 KiB inside a chunk, half-close", chunkedHead + chunks(9, 16<<10) + "4000\r\nxyz", halfClose, true, 400, false},
		{"chunked, 160 KiB, stalled", chunkedHead + chunks(10, 16<<10), stall, true, 408, false},
		{"chunked, 160 KiB, stalled inside a chunk size line", chunkedHead + chunks(10, 16<<10) + "40\r", stall, true, 408, false},
		{"chunked, 160 KiB, reset", chunkedHead + chunks(10, 16<<10), reset, true, 0, false},

		{"content-length below the prefetch, half-close", clHead(1000) + strings.Repeat("y", 500), halfClose, false, 400, false},
		{"content-length below the prefetch, close", clHead(1000) + strings.Repeat("y", 500), closeAll, false, 0, false},
		{"content-length below the prefetch, stalled", clHead(1000) + strings.Repeat("y", 500), stall, false, 408, false},
		{"content-length beyond the prefetch, half-close", clHead(big) + strings.Repeat("y", 100<<10), halfClose, true, 400, false},
		{"content-length beyond the prefetch, close", clHead(big) + strings.Repeat("y", 100<<10), closeAll, true, 0, false},
		{"content-length beyond the prefetch, stalled", clHead(big) + strings.Repeat("y", 100<<10), stall, true, 408, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			beAddr, got := recordingBackend(t)
			var dials atomic.Int64
			pool := newPool(t, balancer.RoundRobin, beAddr)
			up := &Upstream{Pool: pool, Retries: 1, IdleConnTimeout: 100 * time.Millisecond, Dial: func(addr string, timeout time.Duration) (net.Conn, error) {
				dials.Add(1)
				return net.DialTimeout("tcp", addr, timeout)
			}}
			pxAddr, pxClosed := proxyNotifying(t, up, Options{ReadTimeout: 400 * time.Millisecond})
			c, err := net.DialTimeout("tcp", pxAddr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			var answer string
			switch tc.end {
			case closeAll:
				c.Close()
			case reset:
				// A reset discards what kelpie has not read yet: wait until
				// it has started forwarding, or it may never see the head.
				waitFor(t, func() bool { return dials.Load() > 0 })
				resetConn(c)
			case halfClose:
				_ = c.(*net.TCPConn).CloseWrite()
				fallthrough
			case stall:
				b, _ := io.ReadAll(c) // kelpie closes after answering
				answer = string(b)
			}
			if tc.status != 0 && !strings.HasPrefix(answer, fmt.Sprintf("HTTP/1.1 %d ", tc.status)) {
				t.Errorf("client got %q, want %d", statusOf(answer), tc.status)
			}
			select { // kelpie is done with the request
			case <-pxClosed:
			case <-time.After(5 * time.Second):
				t.Fatal("kelpie did not close the client connection")
			}
			b := pool.Lookup(beAddr)

			if !tc.upstream {
				if n := dials.Load(); n != 0 {
					t.Errorf("kelpie opened %d upstream connections for a request it could refuse first", n)
				}
			} else {
				var r received
				select {
				case r = <-got:
				case <-time.After(5 * time.Second):
					t.Fatal("the backend's connection did not end")
				}
				if r.complete != tc.complete {
					t.Errorf("backend parsed a complete request: %v, want %v (it read %d bytes ending %q)", r.complete, tc.complete, len(r.data), tail(r.data))
				}
				if !tc.complete {
					if !r.closed {
						t.Error("the upstream connection was not closed")
					}
					if bytes.Contains(r.data, []byte("\r\n0\r\n")) || bytes.HasPrefix(r.data, []byte("0\r\n")) {
						t.Errorf("backend received a last chunk kelpie made up: %q", tail(r.data))
					}
				}
			}
			want := uint64(0)
			if tc.complete {
				want = 1
			}
			if b.Failures() != 0 || b.Requests() != want || b.InFlight() != 0 {
				t.Errorf("backend requests %d failures %d in flight %d, want %d 0 0", b.Requests(), b.Failures(), b.InFlight(), want)
			}
		})
	}
}

func tail(b []byte) []byte {
	if len(b) > 40 {
		return b[len(b)-40:]
	}
	return b
}
