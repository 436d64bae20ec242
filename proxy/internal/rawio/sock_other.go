//go:build !linux

package rawio

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Sock is Linux-only; elsewhere NewListener fails and the proxy accepts
// with net's listener.
type Sock struct{ net.Conn }

// Raw is never called: no Sock is made.
func (s *Sock) Raw() *Conn { return nil }

// TCPConn is never called: no Sock is made.
func (s *Sock) TCPConn() (*net.TCPConn, error) { return nil, errors.New("rawio: linux-only") }

// Listener is Linux-only.
type Listener struct {
	net.Listener
	Backoff func(err error, d time.Duration)
}

// NewListener fails: kelpie's own accept is Linux-only.
func NewListener(net.Listener) (*Listener, error) {
	return nil, errors.New("rawio: kelpie's accept is linux-only")
}

// Control is never called: no Sock is made.
func (s *Sock) Control(func(fd uintptr)) error { return errors.New("rawio: linux-only") }

// DeferAccept does nothing: TCP_DEFER_ACCEPT is Linux's.
func DeferAccept(network, address string, c syscall.RawConn) error { return nil }
