package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// wireBackend is a raw HTTP/1.1 backend on loopback for framing tests: it keeps
// every byte it receives, exactly as it arrived, and answers each request it
// can parse (with Go's strict net/http parser) with a fixed 200 "ok". A
// request it cannot parse closes the connection. Nothing in it is fasthttp,
// so what it records is what kelpie put on the wire.
type wireBackend struct {
	addr string
	ln   net.Listener

	noRaw bool // set before use: keep no raw bytes (a fuzzing run sends many)

	mu    sync.Mutex
	raw   bytes.Buffer
	reqs  []*http.Request // parsed requests, bodies read into bodies
	bodys [][]byte
	conns []net.Conn
	wg    sync.WaitGroup
}

func startWire(t testing.TB) *wireBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &wireBackend{addr: ln.Addr().String(), ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns = append(r.conns, c)
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		r.mu.Lock()
		for _, c := range r.conns { // kelpie's pooled connections stay open
			_ = c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// wireConn appends what it reads to the backend's log.
type wireConn struct {
	net.Conn
	w *wireBackend
}

func (c wireConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if !c.w.noRaw {
		c.w.mu.Lock()
		c.w.raw.Write(b[:n])
		c.w.mu.Unlock()
	}
	return n, err
}

func (r *wireBackend) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(wireConn{c, r})
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		r.mu.Lock()
		r.reqs = append(r.reqs, req)
		r.bodys = append(r.bodys, body)
		r.mu.Unlock()
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
		if req.Close {
			return
		}
	}
}

// bytes returns a copy of everything received so far.
func (r *wireBackend) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.raw.Bytes())
}

// size returns how many bytes were received so far.
func (r *wireBackend) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.raw.Len()
}

// requests returns how many requests the backend has parsed so far.
func (r *wireBackend) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// body returns the body of the i-th request the backend parsed.
func (r *wireBackend) body(i int) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i >= len(r.bodys) {
		return nil
	}
	return r.bodys[i]
}
