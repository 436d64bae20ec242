package testkit

import (
	"io"
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
	return FreePorts(t, 1)[0]
}

// FreePorts returns n distinct loopback ports, each free for TCP and UDP.
// Every port stays bound until all n are chosen, so the kernel cannot hand
// out the same one twice (picking them one FreePort at a time could: a
// Consul agent then refused to start with two of its ports equal).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries == 50*n {
			t.Fatalf("free ports: no %d loopback ports free for both TCP and UDP in %d tries", n, tries)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		held = append(held, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		held = append(held, pc)
		ports = append(ports, port)
	}
	return ports
}

// ResetConn closes c with an RST instead of a FIN (SO_LINGER 0), as a
// crashed peer's kernel would.
func ResetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}
