//go:build !linux

package rawio

import "net"

// Conn is Linux-only; elsewhere New returns nil and connections use
// net.Conn's Read and Write.
type Conn struct{ net.Conn }

// New returns nil: raw I/O is Linux-only.
func New(net.Conn) *Conn { return nil }

// SendThenRead sends nothing: rest is all of w.
func (r *Conn) SendThenRead(w, b []byte) (rest []byte, n int, err error) { return w, 0, nil }

// ReadPooled is never called: New returns nil.
func (r *Conn) ReadPooled(get func() []byte, put func([]byte)) ([]byte, int, error) {
	return nil, 0, nil
}
