//go:build linux

package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server *net.TCPConn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); c.Close() })
	return c.(*net.TCPConn), client
}

// TestParkerResumesReadable: a parked connection comes back through Resume
// when its peer writes, with the bytes unread; ticks come every Period.
func TestParkerResumesReadable(t *testing.T) {
	resumed, ticks := make(chan *Sock, 1), make(chan struct{}, 10)
	p, err := NewParker(20*time.Millisecond, func(c *Sock) { resumed <- c }, func() {
		select {
		case ticks <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	defer p.Close()
	<-ticks
	s, c := tcpPair(t)
	if err := p.Park(s, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if p.Len() != 1 {
		t.Fatalf("Len %d after Park, want 1", p.Len())
	}
	select {
	case got := <-resumed:
		t.Fatalf("resumed %v before the peer wrote", got)
	case <-time.After(100 * time.Millisecond):
	}
	c.Write([]byte("hello"))
	var r *Sock
	select {
	case r = <-resumed:
		defer r.Close()
		if r.RemoteAddr().String() != c.LocalAddr().String() || r.LocalAddr().String() != c.RemoteAddr().String() {
			t.Fatalf("resumed %s-%s, want the parked %s-%s", r.LocalAddr(), r.RemoteAddr(), c.RemoteAddr(), c.LocalAddr())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not resumed after the peer wrote")
	}
	if p.Len() != 0 {
		t.Fatalf("Len %d after resume, want 0", p.Len())
	}
	b := make([]byte, 5)
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(r, b); err != nil || string(b) != "hello" {
		t.Fatalf("read after resume: %q %v", b, err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("the parked *net.TCPConn is still open")
	}
	// Parked again (a Sock that never waited: its descriptor as it is),
	// then resumed again: the fd goes back on the set.
	if err := p.Park(r, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on the parked Sock: %v, want net.ErrClosed", err)
	}
	c.Write([]byte("x"))
	var r2 *Sock
	select {
	case r2 = <-resumed:
	case <-time.After(5 * time.Second):
		t.Fatal("not resumed the second time")
	}
	// A Sock that waited (on Go's poller) parks too: its descriptor is
	// duplicated off the poller.
	if _, err := r2.Read(b[:1]); err != nil {
		t.Fatal(err)
	}
	r2.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r2.Read(b[:1]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with nothing sent: %v, want a timeout", err)
	}
	if r2.polled.Load() == nil {
		t.Fatal("a Sock that waited is not on the poller")
	}
	if err := p.Park(r2, time.Time{}); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("y"))
	select {
	case r3 := <-resumed:
		defer r3.Close()
		r3.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(r3, b[:1]); err != nil || b[0] != 'y' {
			t.Fatalf("read after the third resume: %q %v", b[:1], err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not resumed the third time")
	}
}

// TestParkerExpires: a parked connection whose deadline passes is closed
// (the peer reads EOF) and not resumed.
func TestParkerExpires(t *testing.T) {
	resumed := make(chan *Sock, 1)
	p, err := NewParker(time.Hour, func(c *Sock) { resumed <- c }, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	defer p.Close()
	s, c := tcpPair(t)
	start := time.Now()
	if err := p.Park(s, start.Add(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read %d %v, want EOF at the deadline", n, err)
	}
	if took := time.Since(start); took < 180*time.Millisecond || took > 5*time.Second {
		t.Fatalf("closed after %s, want about 200ms", took)
	}
	if p.Len() != 0 {
		t.Fatalf("Len %d after expiry", p.Len())
	}
	select {
	case <-resumed:
		t.Fatal("an expired connection was resumed")
	default:
	}
}

// TestParkerClose closes the parked connections and refuses Park after.
func TestParkerClose(t *testing.T) {
	p, err := NewParker(time.Hour, func(*Sock) { t.Error("resumed") }, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	s, c := tcpPair(t)
	if err := p.Park(s, time.Time{}); err != nil {
		t.Fatal(err)
	}
	p.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read %v after Close, want EOF", err)
	}
	s2, _ := tcpPair(t)
	if err := p.Park(s2, time.Time{}); err == nil {
		t.Fatal("Park after Close succeeded")
	}
}
