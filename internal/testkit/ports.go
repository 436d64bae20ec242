package testkit

import (
	"net"
	"strconv"
	"testing"
)

// FreeAddr returns a "127.0.0.1:port" address nothing listens on at the
// time of the call: a connect to it is refused, and a listener may take it
// (a race with other processes, acceptable on loopback in tests).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// FreePort returns a loopback port free for both TCP and UDP at the time of
// the call (Consul's Serf needs both on the same number).
func FreePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("free port: no loopback port free for both TCP and UDP in 50 tries")
	return 0
}

// ResetConn closes c with an RST instead of a FIN (SO_LINGER 0), as a
// crashed peer's kernel would.
func ResetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}
