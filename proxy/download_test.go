package proxy

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// writeCounter counts the writes to the client connections it accepts.
type writeCounter struct {
	net.Listener
	writes, bytes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l *writeCounter
}

func (c *countedConn) Write(b []byte) (int, error) {
	c.l.writes.Add(1)
	c.l.bytes.Add(int64(len(b)))
	return c.Conn.Write(b)
}

// A large streamed response body reaches the client in large writes (up to
// streamBuf), not through fasthttp's 4 KiB write buffer: one write system
// call per 4 KiB cost twice HAProxy's CPU per GB downloaded. Whole and in
// order.
func TestStreamedDownloadWritesLargePieces(t *testing.T) {
	const size = 4 << 20
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyStream(bytes.NewReader(body), size) // streamed: above maxBufferedBody
	})
	p, err := New(withTestIO(Options{}), []Route{{Upstream: &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wc := &writeCounter{Listener: ln}
	serveProxyOn(t, p, wc)

	resp, err := http.Get("http://" + ln.Addr().String() + "/big")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("body: %d bytes, equal %v, err %v", len(got), bytes.Equal(got, body), err)
	}
	// 64 KiB pieces: about 64 writes; fasthttp's own copy made 1,024.
	if n := wc.writes.Load(); n > size/(16<<10) {
		t.Errorf("%d bytes went out in %d writes (%d bytes each on average); want at most %d",
			wc.bytes.Load(), n, wc.bytes.Load()/n, size/(16<<10))
	} else {
		t.Logf("%d writes for %d bytes", n, wc.bytes.Load())
	}
}
