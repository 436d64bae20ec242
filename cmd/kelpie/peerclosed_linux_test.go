package main

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpEstablished is TCP_ESTABLISHED in linux/tcp_states.h.
const tcpEstablished = 1

// peerClosed reports whether c's peer has closed its end: the kernel holds
// the FIN (the state has left ESTABLISHED) even if the goroutine reading c
// has not been scheduled to see it yet. Connection counts taken by a test
// backend use it, so that scheduling lag under load does not count a
// connection the proxy has already closed.
func peerClosed(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	_ = raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		closed = err == nil && info.State != tcpEstablished
	})
	return closed
}
