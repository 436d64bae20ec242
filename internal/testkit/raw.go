package testkit

import (
	"bufio"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// rawConnLimit bounds how long one raw connection may live, so that a
// handler waiting on a peer that never closes cannot hang a test run.
const rawConnLimit = 10 * time.Second

// RawServer accepts TCP connections on a loopback port and hands each to a
// handler with a buffered reader: for backends that misbehave below HTTP
// (hang, reset, trickle, send garbage). Connections still open when the
// test ends are closed, and the test waits for every handler to return.
type RawServer struct {
	// Addr is the "127.0.0.1:port" it listens on.
	Addr string
	// Conns counts accepted connections.
	Conns atomic.Int64
	// Heads counts requests read with ReadRequest.
	Heads atomic.Int64
}

// RawHandler serves one connection; the connection is closed when it
// returns. Its deadline is 10s from the accept.
type RawHandler func(s *RawServer, c net.Conn, br *bufio.Reader)

// StartRaw runs fn for each connection until the test ends.
func StartRaw(t testing.TB, fn RawHandler) *RawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("raw server listen: %v", err)
	}
	s := &RawServer{Addr: ln.Addr().String()}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		open = map[net.Conn]struct{}{}
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.Conns.Add(1)
			mu.Lock()
			open[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(open, c)
					mu.Unlock()
					c.Close()
				}()
				_ = c.SetDeadline(time.Now().Add(rawConnLimit))
				fn(s, c, bufio.NewReader(c))
			}()
		}
	}()
	return s
}

// ReadRequest reads one request, head and Content-Length or chunked body,
// from br and counts it in Heads. It reports false when the peer closed or
// sent something that is not a request.
func (s *RawServer) ReadRequest(br *bufio.Reader) bool {
	var req fasthttp.Request
	if err := req.Read(br); err != nil {
		return false
	}
	s.Heads.Add(1)
	return true
}

// Hung is a RawHandler for a backend that accepts and never answers: it
// reads and discards until the peer gives up and closes.
func Hung(_ *RawServer, c net.Conn, br *bufio.Reader) {
	_, _ = io.Copy(io.Discard, br)
}
