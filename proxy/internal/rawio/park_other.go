//go:build !linux

package rawio

import (
	"errors"
	"net"
	"time"
)

// Parker is Linux-only (epoll); elsewhere NewParker fails and idle
// connections keep their goroutines.
type Parker struct{}

// NewParker fails: parking is Linux-only.
func NewParker(time.Duration, func(*Sock), func()) (*Parker, error) {
	return nil, errors.New("parking idle connections is linux-only")
}

// Start does nothing.
func (p *Parker) Start() {}

// Len is 0.
func (p *Parker) Len() int { return 0 }

// Park fails.
func (p *Parker) Park(net.Conn, time.Time) error {
	return errors.New("parking idle connections is linux-only")
}

// Close does nothing.
func (p *Parker) Close() error { return nil }
