package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// readFor reads once from c and returns how long it took. A read still
// blocked after 3 s is a failure: the connection is closed to end it.
func readFor(c net.Conn) (int, time.Duration, error) {
	start := time.Now()
	stop := time.AfterFunc(3*time.Second, func() { c.Close() })
	defer stop.Stop()
	n, err := c.Read(make([]byte, 64))
	return n, time.Since(start), err
}

// A deadline moved later is not moved on the socket: the armed one fires
// early, and the read must carry on until the deadline asked for.
func TestLazyReadDeadlineLaterWaitsForIt(t *testing.T) {
	a, _ := tcpPair(t)
	c := newClientConn(a)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if c.rd.armed.Equal(c.rd.want) {
		t.Fatal("a later deadline moved the socket's deadline; the test would not test laziness")
	}
	n, took, err := readFor(c)
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %d, %v; want a deadline error", n, err)
	}
	if took < 280*time.Millisecond || took > 2*time.Second {
		t.Fatalf("read gave up after %v; want about 300ms (the deadline asked for, not the armed 30ms)", took)
	}
}

func TestLazyReadDeadlineEarlierCutsOff(t *testing.T) {
	a, _ := tcpPair(t)
	c := newClientConn(a)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, took, err := readFor(c)
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %d, %v; want a deadline error", n, err)
	}
	if took < 40*time.Millisecond || took > time.Second {
		t.Fatalf("read gave up after %v; want about 50ms", took)
	}
}

// Data that arrives after the armed deadline fired, but before the one asked
// for, is read as if nothing happened; so are reads with the deadline cleared.
func TestLazyReadDeadlineHidesEarlyFiring(t *testing.T) {
	for _, tc := range []struct {
		name  string
		final time.Duration // 0: clear the deadline
	}{{"later", 2 * time.Second}, {"cleared", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tcpPair(t)
			c := newClientConn(a)
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			var final time.Time
			if tc.final > 0 {
				final = time.Now().Add(tc.final)
			}
			_ = c.SetReadDeadline(final)
			go func() {
				time.Sleep(150 * time.Millisecond)
				_, _ = b.Write([]byte("late"))
			}()
			n, took, err := readFor(c)
			if err != nil || n != 4 {
				t.Fatalf("read = %d, %v after %v; want the 4 bytes sent at 150ms", n, err, took)
			}
			if !c.rd.armed.Equal(final) {
				t.Fatalf("armed deadline %v after the early firing, want it re-armed to %v", c.rd.armed, final)
			}
		})
	}
}

// An expired deadline is renewed when asked: the next read waits again.
func TestLazyReadDeadlineRenewedAfterExpiry(t *testing.T) {
	a, b := tcpPair(t)
	c := newClientConn(a)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := readFor(c); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("first read: %v, want a deadline error", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = b.Write([]byte("x"))
	}()
	if n, took, err := readFor(c); n != 1 || err != nil {
		t.Fatalf("read after renewing = %d, %v after %v; want the byte", n, err, took)
	}
}

// upConn's write deadline is lazy too: a peer that stops reading is cut off
// at the deadline, even after the deadline moved later without the socket's.
func TestUpConnWriteDeadlineCutsOffStalledPeer(t *testing.T) {
	a, _ := tcpPair(t) // the peer never reads
	if tc, ok := a.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4 << 10)
	}
	u := newUpConn(a, settings{response: time.Second, write: 300 * time.Millisecond})
	_ = u.wd.set(time.Now().Add(30 * time.Millisecond)) // armed on the socket
	_ = u.SetWriteDeadline(time.Now().Add(u.writeIdle)) // later: not moved
	if u.wd.armed.Equal(u.wd.want) {
		t.Fatal("the later write deadline moved the socket's; the test would not test laziness")
	}
	start := time.Now()
	buf := make([]byte, 64<<10)
	var err error
	stop := time.AfterFunc(5*time.Second, func() { a.Close() }) // a write that never times out
	defer stop.Stop()
	for err == nil && time.Since(start) < 5*time.Second {
		_, err = u.Write(buf)
	}
	took := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write error %v after %v, want a deadline error", err, took)
	}
	// Each Write after the first re-arms the gap, so the cut-off comes one
	// write timeout after the buffers filled: never before the first deadline.
	if took < 280*time.Millisecond || took > 3*time.Second {
		t.Fatalf("write gave up after %v; want about 300ms (the write timeout, not the armed 30ms)", took)
	}
}

// The client side's write deadline is lazy as well (fasthttp moves it before
// every response): a client that stops reading is cut off at the deadline
// asked for, not at the earlier one still armed, and an earlier one cuts off
// at once.
func TestClientConnLazyWriteDeadline(t *testing.T) {
	for _, tc := range []struct {
		name          string
		first, second time.Duration
		min, max      time.Duration
	}{
		// max is where the defect would show: the earlier, stale deadline
		// for "later" cuts before min; for "earlier", the first one (5s).
		{"later", 30 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, 3 * time.Second},
		{"earlier", 5 * time.Second, 50 * time.Millisecond, 50 * time.Millisecond, 2500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := tcpPair(t) // the peer never reads
			if tc, ok := a.(*net.TCPConn); ok {
				_ = tc.SetWriteBuffer(4 << 10)
			}
			c := newClientConn(a)
			_ = c.SetWriteDeadline(time.Now().Add(tc.first))
			set := time.Now() // the deadline is at least tc.second after this
			_ = c.SetWriteDeadline(time.Now().Add(tc.second))
			if tc.second > tc.first && c.wd.armed.Equal(c.wd.want) {
				t.Fatal("a later write deadline moved the socket's; the test would not test laziness")
			}
			stop := time.AfterFunc(10*time.Second, func() { a.Close() }) // a write that never times out
			defer stop.Stop()
			buf := make([]byte, 16<<20)
			n, err := c.Write(buf)
			// Timed from the deadline's own start, not the write's: on a
			// loaded machine the write may begin after a short deadline
			// has passed (and then write nothing).
			took := time.Since(set)
			if !errors.Is(err, os.ErrDeadlineExceeded) || n >= len(buf) {
				t.Fatalf("write = %d, %v after %v; want at most part of it, then a deadline error", n, err, took)
			}
			if took < tc.min || took > tc.max {
				t.Fatalf("write gave up %v after the deadline was set; want %v (at most %v)", took, tc.second, tc.max)
			}
		})
	}
}

// The proxy's listener hands fasthttp clientConns.
func TestListenerWrapsConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := listener{ln}
	defer l.Close()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*clientConn); !ok {
		t.Fatalf("Accept returned %T, want *clientConn", c)
	}
}

// The raw reads and writes behave as net.Conn's: a large transfer that has
// to wait for buffer space arrives whole and in order, the peer's close is
// io.EOF, a reset is ECONNRESET, and a read on a closed connection is
// net.ErrClosed.
func TestRawIOBehavesLikeNetConn(t *testing.T) {
	a, b := tcpPair(t)
	c := newClientConn(a)
	if _, ok := c.rw.(*rawIO); !ok && runtime.GOOS == "linux" {
		t.Fatalf("clientConn uses %T, want *rawIO on linux", c.rw)
	}
	want := make([]byte, 16<<20) // more than the socket buffers hold

	for i := range want {
		want[i] = byte(i * 7 / 3)
	}
	werr := make(chan error, 1)
	go func() {
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = fmt.Errorf("wrote %d of %d", n, len(want))
		}
		werr <- err
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-werr:
		t.Fatalf("the write returned (%v) before the peer read anything: it never waited for space, so the test tests nothing", err)
	default:
	}
	got, err := io.ReadAll(io.LimitReader(b, int64(len(want))))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("peer read %d bytes (err %v); want the %d written, in order", len(got), err, len(want))
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}

	// Reads: data, then the peer's close.
	_, _ = b.Write([]byte("bye"))
	b.Close()
	buf := make([]byte, 16)
	if n, err := c.Read(buf); n != 3 || err != nil || string(buf[:n]) != "bye" {
		t.Fatalf("read = %d %q %v, want 3 \"bye\" <nil>", n, buf[:n], err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed = %d, %v; want 0, io.EOF", n, err)
	}

	// Reads on a connection closed locally.
	c.Close()
	if _, err := c.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close = %v, want net.ErrClosed", err)
	}
}

func TestRawIOReset(t *testing.T) {
	a, b := tcpPair(t)
	c := newClientConn(a)
	// A close with unread data, or with SO_LINGER 0, sends a reset.
	if tc, ok := b.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	b.Close()
	time.Sleep(50 * time.Millisecond)
	_, err := c.Read(make([]byte, 16))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after a reset = %v, want ECONNRESET", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "read" {
		t.Fatalf("read error %#v, want a *net.OpError for read", err)
	}
}

// upConn holds a small request back and sends it from inside the response
// read; the exchange must look exactly like a write then a read.
func TestUpConnSendsWithTheRead(t *testing.T) {
	a, b := tcpPair(t)
	u := newUpConn(a, settings{response: 2 * time.Second, write: 2 * time.Second})
	go func() { // the backend: echo what arrives, upper-cased
		buf := make([]byte, 64<<10)
		for {
			n, err := b.Read(buf)
			if err != nil {
				return
			}
			_, _ = b.Write(bytes.ToUpper(buf[:n]))
		}
	}()
	for i := range 3 { // the same connection, request after request
		_ = u.SetWriteDeadline(time.Now().Add(u.writeIdle))
		if n, err := u.Write([]byte("get /")); n != 5 || err != nil {
			t.Fatalf("write = %d, %v", n, err)
		}
		if n, err := u.Write([]byte(fmt.Sprint(i))); n != 1 || err != nil {
			t.Fatalf("write = %d, %v", n, err)
		}
		if runtime.GOOS == "linux" && string(u.pend) != "get /"+fmt.Sprint(i) {
			t.Fatalf("request %d: held back %q; the request should wait for the read", i, u.pend)
		}
		_ = u.SetReadDeadline(time.Now().Add(u.readIdle))
		got := make([]byte, 0, 6)
		buf := make([]byte, 64)
		for len(got) < 6 {
			n, err := u.Read(buf)
			if err != nil {
				t.Fatalf("request %d: read: %v after %q", i, err, got)
			}
			got = append(got, buf[:n]...)
		}
		if want := "GET /" + fmt.Sprint(i); string(got) != want {
			t.Fatalf("request %d: reply %q, want %q", i, got, want)
		}
	}
	// A write larger than maxDeferred goes out at once, after what was held.
	_ = u.SetWriteDeadline(time.Now().Add(u.writeIdle))
	_, _ = u.Write([]byte("a"))
	big := bytes.Repeat([]byte("b"), maxDeferred+1)
	if n, err := u.Write(big); n != len(big) || err != nil {
		t.Fatalf("big write = %d, %v", n, err)
	}
	_ = u.SetReadDeadline(time.Now().Add(u.readIdle))
	got, err := io.ReadAll(io.LimitReader(u, int64(1+len(big))))
	if err != nil || string(got) != "A"+strings.Repeat("B", len(big)) {
		t.Fatalf("reply to the big write: %d bytes, %v; want A then %d Bs", len(got), err, len(big))
	}
}

// A pooled connection the backend closed while it sat idle: the request sent
// from inside the read must fail at once, not wait out the response timeout.
func TestUpConnStaleConnectionFailsFast(t *testing.T) {
	a, b := tcpPair(t)
	u := newUpConn(a, settings{response: 5 * time.Second, write: 5 * time.Second})
	b.Close()
	time.Sleep(50 * time.Millisecond) // the FIN has arrived and been polled
	_ = u.SetWriteDeadline(time.Now().Add(u.writeIdle))
	if _, err := u.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if runtime.GOOS == "linux" && len(u.pend) == 0 {
		t.Fatal("the request went out at once; this test is about one sent from inside the read")
	}
	_ = u.SetReadDeadline(time.Now().Add(u.readIdle))
	n, took, err := readFor(u)
	if err == nil || n != 0 {
		t.Fatalf("read = %d, %v; want an error", n, err)
	}
	if !closedEarly(err) {
		t.Fatalf("read error %v is not one kelpie treats as a closed connection (stale retry)", err)
	}
	if took > time.Second {
		t.Fatalf("the read took %v to fail; want at once, not the 5s response timeout", took)
	}
}
