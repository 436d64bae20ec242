package rawio

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Conn reads and writes a TCP connection with raw non-blocking system calls
// under Go's netpoller (syscall.RawConn), instead of net.Conn's Read and
// Write. The sockets are non-blocking, so the calls never block: what they
// skip is the runtime's syscall bookkeeping (entersyscall/exitsyscall), which
// costs more than it looks on a proxy that is all system calls. Below
// saturation it is the larger part: entering a syscall while every P was
// idle wakes the runtime's sysmon thread and sets it polling every 20 µs, and
// on a proxy pinned to one CPU each of those wake-ups preempts the proxy
// (bench/README.md has the profiles). Waiting for readiness, deadlines and
// close still go through the netpoller, exactly as for net.Conn.
//
// The calls are recvfrom and sendto, not read and write: on a socket they do
// the same, but read and write go through the VFS layer first (fdget_pos,
// rw_verify_area, the security hook, sock_read_iter), which perf showed as
// the larger part of the kernel time kelpie spent above HAProxy's, which
// uses recvfrom and sendto. Paired A/B: 4.5 % less CPU per request.
// MSG_NOSIGNAL: a write to a reset connection returns EPIPE, with no SIGPIPE.
//
// One reader and one writer at a time, as for net.Conn under fasthttp.
type Conn struct {
	conn    net.Conn
	rc      syscall.RawConn // nil for a Sock's Conn: sock waits
	sock    *Sock
	rbuf    []byte
	rn      int
	rerr    syscall.Errno
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	readFn  func(uintptr) bool
	writeFn func(uintptr) bool
	sendFn  func(uintptr) bool
	// ReadPooled's buffer source while it runs, and its attempt.
	get      func() []byte
	put      func([]byte)
	pooledFn func(uintptr) bool
}

// New returns nil when c is not a TCP connection (tests wrap theirs, TLS
// wraps the socket): the caller then uses c's own Read and Write.
func New(c net.Conn) *Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &Conn{conn: c, rc: rc}
	r.init()
	return r
}

func (r *Conn) init() {
	r.readFn = r.doRead
	r.writeFn = r.doWrite
	r.sendFn = r.doSendRead
	r.pooledFn = r.doReadPooled
}

// wait runs the attempt fn until it is done, waiting for the socket to be
// ready in between, as syscall.RawConn's Read and Write do.
func (r *Conn) wait(fn func(uintptr) bool, write bool) error {
	switch {
	case r.sock != nil:
		return r.sock.run(fn, write)
	case write:
		return r.rc.Write(fn)
	}
	return r.rc.Read(fn)
}

// doRead is one attempt; false means "not ready, wait for the poller".
func (r *Conn) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)), 0, 0, 0)
		switch e {
		case 0:
			r.rn, r.rerr = int(n), 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.rn, r.rerr = 0, e
		return true
	}
}

// doWrite writes what is left of wbuf; false means "buffer full, wait".
func (r *Conn) doWrite(fd uintptr) bool {
	for r.wn < len(r.wbuf) {
		p := r.wbuf[r.wn:]
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			r.wn += int(n)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.werr = e
		return true
	}
	return true
}

// Read is net.Conn's Read: io.EOF at the end, *net.OpError otherwise.
func (r *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.rbuf = b
	err := r.wait(r.readFn, false) // deadline or close: an *net.OpError already
	n, e := r.rn, r.rerr
	r.rbuf, r.rn, r.rerr = nil, 0, 0
	return r.readResult(err, n, e)
}

// readResult is a read's outcome as net.Conn's Read gives it: err from the
// wait (already an *net.OpError), else e from the call, else io.EOF for 0.
func (r *Conn) readResult(err error, n int, e syscall.Errno) (int, error) {
	switch {
	case err != nil:
		return 0, err
	case e != 0:
		return 0, r.opError("read", e)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// ReadPooled is Read into a buffer from get, taken only when the attempt
// is made and handed back to put before each wait for the poller: a
// connection with nothing to read holds no buffer (an idle tunnel). It
// returns the buffer holding the n bytes, for the caller to put back; nil
// when none is held (an error from the wait itself).
func (r *Conn) ReadPooled(get func() []byte, put func([]byte)) ([]byte, int, error) {
	r.get, r.put = get, put
	err := r.wait(r.pooledFn, false)
	buf, n, e := r.rbuf, r.rn, r.rerr
	r.rbuf, r.rn, r.rerr, r.get, r.put = nil, 0, 0, nil, nil
	n, err = r.readResult(err, n, e)
	return buf, n, err
}

func (r *Conn) doReadPooled(fd uintptr) bool {
	if r.rbuf == nil {
		r.rbuf = r.get()
	}
	if r.doRead(fd) {
		return true
	}
	r.put(r.rbuf)
	r.rbuf = nil
	return false
}

// Write is net.Conn's Write: all of b, or an error.
func (r *Conn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.wbuf = b
	err := r.wait(r.writeFn, true)
	n, e := r.wn, r.werr
	r.wbuf, r.wn, r.werr = nil, 0, 0
	switch {
	case err != nil:
		return n, err
	case e != 0:
		return n, r.opError("write", e)
	}
	return n, nil
}

// SendThenRead writes w, then reads a reply into b, and waits in between
// without the read that would find nothing. The netpoller's read readiness
// is reset before w goes out, so a reply to w cannot be missed: the wait
// ends as soon as it arrives, or at the read deadline. If w cannot go out
// whole without waiting (or the read deadline has passed, or the connection
// is closed), rest is what is left of w: the caller sends it and reads the
// usual way.
func (r *Conn) SendThenRead(w, b []byte) (rest []byte, n int, err error) {
	r.wbuf, r.rbuf = w, b
	err = r.wait(r.sendFn, false)
	wn, werr, rn, rerr := r.wn, r.werr, r.rn, r.rerr
	r.wbuf, r.rbuf, r.wn, r.werr, r.rn, r.rerr = nil, nil, 0, 0, 0, 0
	switch {
	case werr != 0:
		return nil, 0, r.opError("write", werr)
	case wn < len(w):
		return w[wn:], 0, err
	}
	n, err = r.readResult(err, rn, rerr)
	return nil, n, err
}

func (r *Conn) doSendRead(fd uintptr) bool {
	if r.wn < len(r.wbuf) {
		if !r.doWrite(fd) || r.werr != 0 {
			return true // would block (the caller finishes it), or failed
		}
		return false // sent: wait for the reply
	}
	return r.doRead(fd)
}

func (r *Conn) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.conn.LocalAddr(), Addr: r.conn.RemoteAddr(), Err: os.NewSyscallError(op, e)}
}
