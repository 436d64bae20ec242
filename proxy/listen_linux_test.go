package proxy

import (
	"net"
	"syscall"
	"testing"

	"github.com/kelpie-lb/kelpie/proxy/internal/rawio"
)

// Connections Listen accepts are kelpie's own (rawio.Sock) and carry no TCP
// keep-alive (Go's default turns it on, at four setsockopt calls per
// connection); kelpie's idle timeouts end idle clients instead.
func TestListenAcceptsWithoutKeepAlive(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", IORaw)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sock, ok := s.(*rawio.Sock)
	if !ok {
		t.Fatalf("Listen accepted a %T, want a *rawio.Sock", s)
	}
	var on int
	var gerr error
	if err := sock.Control(func(fd uintptr) {
		on, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if on != 0 {
		t.Errorf("SO_KEEPALIVE on an accepted connection is %d, want 0", on)
	}
}
