package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/proxy/internal/rawio"
)

// A tunnel's moving parts: the two directions' copies, their buffers, and
// the watch over its idle and drain timeouts (tunnel.go sets them up).

// tunnelWatch closes its tunnel when it has been idle for idle, or when its
// backend has been drained or removed for drain. check runs on its timer,
// one call at a time (each re-arms the timer), until stop.
type tunnelWatch struct {
	p                  *Proxy
	t                  *tunnel
	idle, drain, every time.Duration
	timer              *time.Timer
	mu                 sync.Mutex // stopped, against a re-arm after stop
	stopped            bool
	draining           time.Time // when the backend was first seen drained
}

func (w *tunnelWatch) check() {
	now, t := time.Now(), w.t
	switch {
	case now.Sub(time.Unix(0, t.last.Load())) >= w.idle:
		w.p.log.Debug("tunnel idle: closing", "backend", t.b.Address(), "idle", w.idle)
		t.close()
		return
	case t.b.State().Drained || t.b.Down()&balancer.ReasonRemoved != 0:
		if w.draining.IsZero() {
			w.draining = now
		} else if now.Sub(w.draining) >= w.drain {
			w.p.log.Info("tunnel closed: backend drained", "backend", t.b.Address(), "tunnel_drain", w.drain)
			t.close()
			return
		}
	default:
		w.draining = time.Time{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.timer.Reset(w.every)
	}
}

func (w *tunnelWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}

// watchEvery is how often a tunnel checks its timeouts: a quarter of the
// shorter, between 10ms and 1s.
func watchEvery(idle, drain time.Duration) time.Duration {
	return min(max(min(idle, drain)/4, 10*time.Millisecond), time.Second)
}

// copyHalf copies what read returns to dst, noting activity, then
// half-closes dst so the other side sees the end of this direction.
func copyHalf(t *tunnel, dst net.Conn, read halfReader) {
	for {
		buf, n, err := read.read()
		if n > 0 {
			t.last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				read.release(buf)
				t.close()
				return
			}
		}
		read.release(buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
					return
				}
			}
			t.close()
			return
		}
	}
}

// halfReader is one direction's source: read returns a buffer holding n
// bytes, which release gives back (nil is allowed) once they are written.
type halfReader struct {
	read    func() ([]byte, int, error)
	release func([]byte)
}

// reader reads src into a buffer of its own, held for the tunnel's life.
func (s *tunnelSet) reader(src io.Reader) halfReader {
	buf := make([]byte, tunnelBuffer)
	return halfReader{
		read: func() ([]byte, int, error) {
			n, err := src.Read(buf)
			return buf, n, err
		},
		release: func([]byte) {},
	}
}

// clientReader reads the tunnel's client. A plain client read with raw
// system calls takes pooled buffers only when it has bytes, as
// pooledReader. When the client sent nothing after the upgrade request
// (t.ccQuiet), fasthttp's reader holds nothing and the socket is read from
// the start; otherwise the first read goes through the hijacked connection
// into a buffer of at least readBuffer bytes, fasthttp's read buffer, so
// bufio hands over everything it held, and it is never read again. Other
// clients (TLS, std I/O) keep a buffer of their own.
func (s *tunnelSet) clientReader(t *tunnel, readBuffer int) halfReader {
	if t.cc == nil || !t.cc.rawRead() {
		return s.reader(t.client)
	}
	pooled := s.pooled(t.cc.readPooled)
	if t.ccQuiet {
		return pooled
	}
	first := true
	return halfReader{
		read: func() ([]byte, int, error) {
			if !first {
				return pooled.read()
			}
			first = false
			buf := make([]byte, max(tunnelBuffer, readBuffer))
			n, err := t.client.Read(buf)
			return buf, n, err
		},
		release: pooled.release,
	}
}

// pooledReader reads src into buffers of the set's pool, taken only when
// bytes are there (rawio.Conn.ReadPooled).
func (s *tunnelSet) pooledReader(src *rawio.Conn) halfReader {
	return s.pooled(src.ReadPooled)
}

// pooled is a halfReader over a ReadPooled-like read from the set's pool.
func (s *tunnelSet) pooled(read func(get func() []byte, put func([]byte)) ([]byte, int, error)) halfReader {
	return halfReader{
		read:    func() ([]byte, int, error) { return read(s.get, s.put) },
		release: s.put,
	}
}

// get is a buffer from the set's pool.
func (s *tunnelSet) get() []byte {
	if b, ok := s.bufs.Get().(*[tunnelBuffer]byte); ok {
		return b[:]
	}
	return new([tunnelBuffer]byte)[:]
}

// put gives a buffer from get back; nil, or one of another size (the
// client's first), is ignored.
func (s *tunnelSet) put(b []byte) {
	if len(b) == tunnelBuffer {
		s.bufs.Put((*[tunnelBuffer]byte)(b))
	}
}
