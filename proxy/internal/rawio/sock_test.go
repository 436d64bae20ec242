//go:build linux

package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// rawListen returns a Listener on a loopback port, closed when the test
// ends.
func rawListen(t *testing.T) *Listener {
	t.Helper()
	l, err := NewListener(listen(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// sockPair returns a Sock accepted by a Listener and the client's end.
func sockPair(t *testing.T) (*Sock, net.Conn) {
	t.Helper()
	l := rawListen(t)
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.AcceptSock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c
}

func noDelay(t *testing.T, s *Sock) int {
	t.Helper()
	var v int
	if err := s.control(func(fd int) (err error) {
		v, err = syscall.GetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSockServesWithoutPoller: a request that is there when the Sock reads
// and a response that fits the socket buffer never put the socket on Go's
// netpoller; the addresses are the connection's; TCP_NODELAY comes with the
// second write.
func TestSockServesWithoutPoller(t *testing.T) {
	s, c := sockPair(t)
	if s.RemoteAddr().String() != c.LocalAddr().String() || s.LocalAddr().String() != c.RemoteAddr().String() {
		t.Fatalf("Sock %s-%s, want %s-%s", s.LocalAddr(), s.RemoteAddr(), c.RemoteAddr(), c.LocalAddr())
	}
	c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	time.Sleep(20 * time.Millisecond) // the request is in before the read
	s.SetReadDeadline(time.Now().Add(time.Minute))
	s.SetWriteDeadline(time.Now().Add(time.Minute))
	b := make([]byte, 64)
	n, err := s.Read(b)
	if err != nil || string(b[:n]) != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("read %q %v", b[:n], err)
	}
	if _, err := s.Write([]byte("HTTP/1.1 200 OK\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if s.polled.Load() != nil {
		t.Fatal("the socket went on the poller without waiting")
	}
	if v := noDelay(t, s); v != 0 {
		t.Fatalf("TCP_NODELAY %d after one write, want 0 (set with the second)", v)
	}
	s.Write([]byte("x"))
	if v := noDelay(t, s); v == 0 {
		t.Fatal("TCP_NODELAY not set by the second write")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "HTTP/1.1 200 OK\r\n\r\nx" {
		t.Fatalf("client read %q %v", got, err)
	}
	if _, err := s.Read(b); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v, want net.ErrClosed", err)
	}
}

// TestSockWaitsOnPoller: a read with nothing there waits (on the poller)
// until the peer writes, and a deadline set before the wait cuts it off.
func TestSockWaitsOnPoller(t *testing.T) {
	s, c := sockPair(t)
	go func() {
		time.Sleep(50 * time.Millisecond)
		c.Write([]byte("late"))
	}()
	b := make([]byte, 16)
	n, err := s.Read(b)
	if err != nil || string(b[:n]) != "late" {
		t.Fatalf("read %q %v", b[:n], err)
	}
	if s.polled.Load() == nil {
		t.Fatal("a read that waited did not use the poller")
	}
	start := time.Now()
	s.SetReadDeadline(start.Add(100 * time.Millisecond))
	_, err = s.Read(b)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	if took := time.Since(start); took < 90*time.Millisecond || took > 5*time.Second {
		t.Fatalf("timed out after %s, want 100ms", took)
	}
}

// TestSockDeadlineBeforePoller: deadlines set before the socket waited
// hold as net's do: one that passed fails the read even with bytes there,
// and one that passes while waiting ends the wait.
func TestSockDeadlineBeforePoller(t *testing.T) {
	s, c := sockPair(t)
	c.Write([]byte("there"))
	time.Sleep(20 * time.Millisecond)
	s.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := s.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}
	s.SetReadDeadline(time.Time{})
	b := make([]byte, 8)
	if n, err := s.Read(b); err != nil || string(b[:n]) != "there" {
		t.Fatalf("read with the deadline cleared: %q %v", b[:n], err)
	}
	s2, _ := sockPair(t)
	start := time.Now()
	s2.SetReadDeadline(start.Add(80 * time.Millisecond))
	if _, err := s2.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want a timeout", err)
	}
	if took := time.Since(start); took < 70*time.Millisecond || took > 5*time.Second {
		t.Fatalf("timed out after %s, want 80ms", took)
	}
}

// TestSockWokenByDeadlineAndClose: another goroutine's past deadline or
// Close ends a read that waits (the idler's sweep, a tunnel's end).
func TestSockWokenByDeadlineAndClose(t *testing.T) {
	for _, wake := range []string{"deadline", "close"} {
		t.Run(wake, func(t *testing.T) {
			s, _ := sockPair(t)
			done := make(chan error, 1)
			go func() {
				_, err := s.Read(make([]byte, 8))
				done <- err
			}()
			time.Sleep(50 * time.Millisecond)
			if wake == "deadline" {
				s.SetReadDeadline(time.Unix(1, 0))
			} else {
				s.Close()
			}
			select {
			case err := <-done:
				want := os.ErrDeadlineExceeded
				if wake == "close" {
					want = net.ErrClosed
				}
				if !errors.Is(err, want) {
					t.Fatalf("read ended by %s: %v, want %v", wake, err, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("read not ended by %s", wake)
			}
		})
	}
}

// TestSockCloseWrite: a half-close reaches the peer as EOF, and the Sock
// still reads.
func TestSockCloseWrite(t *testing.T) {
	s, c := sockPair(t)
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read %v after CloseWrite, want EOF", err)
	}
	c.Write([]byte("still"))
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 8)
	if n, err := io.ReadFull(s, b[:5]); err != nil || string(b[:n]) != "still" {
		t.Fatalf("read after CloseWrite: %q %v", b[:n], err)
	}
}

// TestListenerClose: closing the listener ends a waiting Accept with net's
// closed-listener error, which fasthttp's Serve takes for its end.
func TestListenerClose(t *testing.T) {
	l := rawListen(t)
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "use of closed network connection") {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept not ended by Close")
	}
}

// TestListenerRidesOutEMFILE: out of descriptors, Accept backs off and
// accepts once one is free, instead of failing (fasthttp would stop
// serving for good).
func TestListenerRidesOutEMFILE(t *testing.T) {
	l := rawListen(t)
	var backoffs atomic.Int32
	l.Backoff = func(err error, d time.Duration) {
		if !errors.Is(err, syscall.EMFILE) {
			t.Errorf("backoff on %v, want EMFILE", err)
		}
		backoffs.Add(1)
	}
	// The client's socket first, then fill every descriptor left under a
	// lowered soft limit.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var fill []int
	defer func() {
		for _, fd := range fill {
			syscall.Close(fd)
		}
	}()
	low := lim
	low.Cur = 256
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	for {
		fd, err := syscall.Dup(0)
		if err != nil {
			break
		}
		fill = append(fill, fd)
	}
	done := make(chan error, 1)
	go func() {
		s, err := l.AcceptSock()
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for backoffs.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if backoffs.Load() < 2 {
		t.Fatal("Accept did not back off on EMFILE")
	}
	select {
	case err := <-done:
		t.Fatalf("Accept returned %v while out of descriptors", err)
	default:
	}
	syscall.Close(fill[len(fill)-1])
	fill = fill[:len(fill)-1]
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Accept after a descriptor was freed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not resume once a descriptor was free")
	}
}

// TestDeferAccept: a listener with DeferAccept hands over a connection once
// its first bytes are in, and a silent one only later, still in the end.
func TestDeferAccept(t *testing.T) {
	lc := net.ListenConfig{Control: DeferAccept}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan *Sock, 2)
	go func() {
		for {
			s, err := l.AcceptSock()
			if err != nil {
				return
			}
			accepted <- s
		}
	}()
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	select {
	case s := <-accepted:
		t.Fatalf("a connection that sent nothing was accepted after %s", time.Since(start))
		s.Close()
	case <-time.After(300 * time.Millisecond):
	}
	talker, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer talker.Close()
	talker.Write([]byte("GET"))
	select {
	case s := <-accepted:
		defer s.Close()
		if s.RemoteAddr().String() != talker.LocalAddr().String() {
			t.Fatalf("accepted %s first, want the one that sent, %s", s.RemoteAddr(), talker.LocalAddr())
		}
		b := make([]byte, 8)
		if n, err := s.Read(b); err != nil || string(b[:n]) != "GET" || s.polled.Load() != nil {
			t.Fatalf("first read %q %v (polled %v), want GET without waiting", b[:n], err, s.polled.Load() != nil)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a connection that sent was not accepted")
	}
	select {
	case s := <-accepted:
		defer s.Close()
		if s.RemoteAddr().String() != silent.LocalAddr().String() {
			t.Fatalf("accepted %s, want the silent %s", s.RemoteAddr(), silent.LocalAddr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the silent connection was never accepted")
	}
}

// errListener fails its first Accept with err, then blocks until closed.
type errListener struct {
	net.Listener
	err  error
	once atomic.Bool
}

func (l *errListener) Accept() (net.Conn, error) {
	if !l.once.Swap(true) {
		return nil, l.err
	}
	return l.Listener.Accept()
}

// Assumption 10: fasthttp's Serve stops for good on an Accept error other
// than a timeout (so Listener must not return EMFILE), and ends without an
// error on net.ErrClosed (so Listener's close must read as net's).
func TestContractServeEndsOnAcceptError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		wantErr bool
	}{
		{"EMFILE", &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{"closed", &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			s := &fasthttp.Server{Handler: func(*fasthttp.RequestCtx) {}, Logger: quiet{}}
			done := make(chan error, 1)
			go func() { done <- s.Serve(&errListener{Listener: ln, err: tc.err}) }()
			select {
			case err := <-done:
				if (err != nil) != tc.wantErr {
					broken(t, 10, "Serve ends on a non-timeout Accept error, quietly on a closed listener", "Serve returned %v after Accept failed with %v", err, tc.err)
				}
			case <-time.After(3 * time.Second):
				broken(t, 10, "Serve ends on a non-timeout Accept error, quietly on a closed listener", "Serve went on after Accept failed with %v", tc.err)
			}
		})
	}
}
