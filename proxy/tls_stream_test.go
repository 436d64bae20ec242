package proxy

import (
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// TestTLSClientStreamIsScanned: over TLS, the head scan and the record of
// how the client's stream ended see the decrypted requests. A bare LF is
// refused at once, and an upload cut off at a chunk boundary (the client
// sends close_notify, a clean end of the TLS stream) never reaches the
// backend as a complete request. Were the clientConn beneath TLS, it would
// scan ciphertext and could see neither.
func TestTLSClientStreamIsScanned(t *testing.T) {
	ca := testkit.NewCA(t)
	cert, key := ca.WritePair(t, t.TempDir(), "a", "a.test")
	store, err := NewCertStore([]CertFile{{cert, key}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	beAddr, got := recordingBackend(t)
	pool := newPool(t, balancer.RoundRobin, beAddr)
	addr := startTLSProxy(t, &Upstream{Pool: pool, Retries: 1}, Options{ReadTimeout: 2 * time.Second},
		ServerTLSConfig(ServerTLSOptions{Certs: store}))
	dial := func() *tls.Conn {
		c := dialTLSClient(t, addr, &tls.Config{ServerName: "a.test", RootCAs: ca.Pool()})
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}

	c := dial()
	start := time.Now()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\nHost: a\n\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 400 ") || !strings.Contains(string(b), "bare LF") {
		t.Errorf("bare LF over TLS: got %q, want 400 naming the bare LF", statusOf(string(b)))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("bare LF over TLS answered after %v, not at once", d)
	}

	c = dial()
	head := "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	if _, err := io.WriteString(c, head+chunks(10, 16<<10)); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite() // close_notify: the TLS stream ends cleanly, mid-body
	b, _ = io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 400 ") {
		t.Errorf("truncated upload over TLS: client got %q, want 400", statusOf(string(b)))
	}
	select {
	case r := <-got:
		if r.complete {
			t.Errorf("the backend parsed a complete request from a truncated TLS upload (it read %d bytes ending %q)", len(r.data), tail(r.data))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the backend's connection did not end")
	}
	if b := pool.Lookup(beAddr); b.Failures() != 0 {
		t.Errorf("the client's truncated upload counted %d failures against the backend", b.Failures())
	}
}
