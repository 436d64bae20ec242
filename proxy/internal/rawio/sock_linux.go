package rawio

import (
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Connection churn. Go's net does three things for every connection it
// accepts that a proxy answering one request per connection pays for in
// full: it registers the socket with the netpoller (epoll_ctl ADD, and DEL
// on close), asks the kernel for the local address (getsockname), and sets
// TCP_NODELAY. HAProxy does none of these up front: it reads first and
// registers only a socket that would block ("speculative I/O"). Listener
// and Sock do the same under Go: accept4 straight into a non-blocking
// socket, raw reads and writes on it, and the netpoller only once the
// socket has to be waited for (Sock.poll: os.NewFile, one fcntl and the
// epoll_ctl ADD), which a client that sends its request with the
// connection and takes a short response never needs. The local address is
// asked for when someone asks for it, and TCP_NODELAY is set before a
// connection's second write: its first can never be held back by Nagle's
// algorithm (Linux delays a small segment only while an earlier small one
// is unacknowledged), which is when nginx sets it too (on a connection's
// move to keep-alive). bench/README.md, "Connection churn", has the
// system calls and CPU per request before and after.

// Sock is a TCP connection Listener accepted. It is a net.Conn whose reads
// and writes are raw system calls (its Conn), and it joins Go's netpoller
// only when a read or write would block. Deadlines set before then are
// kept and checked by each attempt; they go on the poller with the socket.
type Sock struct {
	Conn  // raw reads and writes; Conn.sock is the Sock itself
	raddr *net.TCPAddr

	polled atomic.Pointer[polledSock] // set once, by poll

	laddr atomic.Pointer[net.TCPAddr] // once asked for (LocalAddr)

	mu       sync.Mutex // fd and deadlines until polled; close
	fd       int        // -1 once closed or detached
	rdl, wdl time.Time

	// The writer's (one at a time): TCP_NODELAY is set before the second
	// write.
	wrote, nodelay bool
}

// polledSock is a Sock's socket on the netpoller: an os.File, since that is
// the one way to put a descriptor on Go's poller from outside the runtime.
type polledSock struct {
	f  *os.File
	rc syscall.RawConn
}

var _ net.Conn = (*Sock)(nil)

// NewSock returns the Sock of fd, a connected non-blocking TCP socket that
// is now the Sock's to close, and its peer's address.
func NewSock(fd int, raddr *net.TCPAddr) *Sock {
	s := &Sock{fd: fd, raddr: raddr}
	s.Conn.conn, s.Conn.sock = s, s
	s.Conn.init()
	return s
}

// Raw is the Sock's raw reader and writer (the Sock's own Read and Write).
func (s *Sock) Raw() *Conn { return &s.Conn }

// run is Conn.wait for a Sock: attempts straight on the socket until one
// would block, then on the poller.
func (s *Sock) run(fn func(uintptr) bool, write bool) error {
	if write {
		s.beforeWrite()
	}
	p := s.polled.Load()
	if p == nil {
		var err error
		if p, err = s.try(fn, write); p == nil {
			return err
		}
	}
	var err error
	if write {
		err = p.rc.Write(fn)
	} else {
		err = p.rc.Read(fn)
	}
	if err != nil {
		return s.opError(opName(write), s.closedErr(err))
	}
	return nil
}

// closedErr is err, or net.ErrClosed when s is closed: os.File's RawConn
// reports its close as internal/poll's "use of closed file", which nothing
// outside the standard library can name.
func (s *Sock) closedErr(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	return err
}

// try makes the attempt on the socket itself, under the lock so that Close
// cannot hand its descriptor to another connection meanwhile. It returns
// the polled socket when the attempt would block, nil when the attempt is
// done or failed (err).
func (s *Sock) try(fn func(uintptr) bool, write bool) (*polledSock, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.polled.Load(); p != nil {
		return p, nil
	}
	if s.fd < 0 {
		return nil, s.opError(opName(write), net.ErrClosed)
	}
	dl := s.rdl
	if write {
		dl = s.wdl
	}
	if !dl.IsZero() && !time.Now().Before(dl) {
		return nil, s.opError(opName(write), os.ErrDeadlineExceeded)
	}
	if fn(uintptr(s.fd)) {
		return nil, nil
	}
	p, err := s.poll()
	if err != nil {
		return nil, s.opError(opName(write), err)
	}
	return p, nil
}

// poll puts the socket on the netpoller with the deadlines asked for so
// far. Under s.mu.
func (s *Sock) poll() (*polledSock, error) {
	f := os.NewFile(uintptr(s.fd), "tcp") // non-blocking: pollable
	rc, err := f.SyscallConn()
	if err == nil && !s.rdl.IsZero() {
		err = f.SetReadDeadline(s.rdl)
	}
	if err == nil && !s.wdl.IsZero() {
		err = f.SetWriteDeadline(s.wdl)
	}
	if err != nil {
		// Not pollable (os.ErrNoDeadline): the socket stays the Sock's.
		return nil, err
	}
	p := &polledSock{f: f, rc: rc}
	s.polled.Store(p)
	return p, nil
}

// beforeWrite sets TCP_NODELAY before the connection's second write.
func (s *Sock) beforeWrite() {
	if s.nodelay {
		return
	}
	if !s.wrote {
		s.wrote = true
		return
	}
	s.nodelay = true
	s.control(func(fd int) error {
		return syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	})
}

// unpolled runs fn under s.mu if the socket is not on the poller, and
// returns the polled socket, fn not run, if it is.
func (s *Sock) unpolled(fn func() error) (*polledSock, error) {
	if p := s.polled.Load(); p != nil {
		return p, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.polled.Load(); p != nil {
		return p, nil
	}
	if s.fd < 0 {
		return nil, net.ErrClosed
	}
	return nil, fn()
}

// control runs fn on the socket's descriptor.
func (s *Sock) control(fn func(fd int) error) error {
	p, err := s.unpolled(func() error { return fn(s.fd) })
	if p == nil {
		return err
	}
	if cerr := p.rc.Control(func(fd uintptr) { err = fn(int(fd)) }); cerr != nil {
		return cerr
	}
	return err
}

// Control runs fn on the socket's descriptor, as syscall.RawConn's Control.
func (s *Sock) Control(fn func(fd uintptr)) error {
	return s.control(func(fd int) error { fn(uintptr(fd)); return nil })
}

// Close closes the socket.
func (s *Sock) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return s.opError("close", net.ErrClosed)
	}
	fd := s.fd
	s.fd = -1
	if p := s.polled.Load(); p != nil {
		return p.f.Close() // off the poller, then closed
	}
	// Raw, as the reads and writes: closing a socket without SO_LINGER
	// does not block, and syscall.Close's blocking-call path would have the
	// runtime's sysmon hand the processor to another thread while the
	// kernel sends the FIN.
	if _, _, e := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0); e != 0 {
		return s.opError("close", os.NewSyscallError("close", e))
	}
	return nil
}

// detach closes the Sock but not its socket, whose descriptor it returns
// (close-on-exec, non-blocking), on no poller of Go's: a polled socket's
// descriptor is duplicated first. For the Parker.
func (s *Sock) detach() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return -1, net.ErrClosed
	}
	p := s.polled.Load()
	if p == nil {
		fd := s.fd
		s.fd = -1
		return fd, nil
	}
	fd, err := dupFd(p.rc)
	if err != nil {
		return -1, err
	}
	s.fd = -1
	p.f.Close()
	return int(fd), nil
}

// SetDeadline sets both deadlines.
func (s *Sock) SetDeadline(t time.Time) error { return s.setDeadline(t, true, true) }

// SetReadDeadline sets the read deadline.
func (s *Sock) SetReadDeadline(t time.Time) error { return s.setDeadline(t, true, false) }

// SetWriteDeadline sets the write deadline.
func (s *Sock) SetWriteDeadline(t time.Time) error { return s.setDeadline(t, false, true) }

func (s *Sock) setDeadline(t time.Time, read, write bool) error {
	p, err := s.unpolled(func() error {
		if read {
			s.rdl = t
		}
		if write {
			s.wdl = t
		}
		return nil
	})
	if p == nil {
		if err != nil {
			return s.opError("set", err)
		}
		return nil
	}
	switch {
	case read && write:
		err = p.f.SetDeadline(t)
	case read:
		err = p.f.SetReadDeadline(t)
	default:
		err = p.f.SetWriteDeadline(t)
	}
	if err != nil {
		return s.opError("set", err)
	}
	return nil
}

// RemoteAddr is the peer's address, from accept.
func (s *Sock) RemoteAddr() net.Addr { return s.raddr }

// LocalAddr is the socket's own address, asked of the kernel the first time
// (a zero TCPAddr if the socket is closed by then).
func (s *Sock) LocalAddr() net.Addr {
	if a := s.laddr.Load(); a != nil {
		return a
	}
	var sa syscall.Sockaddr
	err := s.control(func(fd int) (err error) {
		sa, err = syscall.Getsockname(fd)
		return err
	})
	a := &net.TCPAddr{}
	if err == nil {
		a = sockaddrTCP(sa)
	}
	s.laddr.Store(a)
	return a
}

// CloseWrite shuts down the sending side (a tunnel's half-close).
func (s *Sock) CloseWrite() error { return s.shutdown(syscall.SHUT_WR, "close-write") }

// CloseRead shuts down the receiving side.
func (s *Sock) CloseRead() error { return s.shutdown(syscall.SHUT_RD, "close-read") }

func (s *Sock) shutdown(how int, op string) error {
	if err := s.control(func(fd int) error { return syscall.Shutdown(fd, how) }); err != nil {
		return s.opError(op, os.NewSyscallError("shutdown", err))
	}
	return nil
}

// opError wraps err as net's connections do, with the os.File's close error
// given as net's.
func (s *Sock) opError(op string, err error) error {
	e := &net.OpError{Op: op, Net: "tcp", Addr: s.raddr, Err: err}
	if a := s.laddr.Load(); a != nil { // not asked for here: s.mu may be held
		e.Source = a
	}
	return e
}

func opName(write bool) string {
	if write {
		return "write"
	}
	return "read"
}

// Listener accepts Socks on a TCP listening socket. Accept is for one
// goroutine at a time (fasthttp's Serve).
type Listener struct {
	f      *os.File // the listening socket, on Go's netpoller
	rc     syscall.RawConn
	addr   net.Addr
	closed atomic.Bool
	// Backoff, if set, hears of an accept that failed for want of
	// descriptors or memory and is retried after d.
	Backoff func(err error, d time.Duration)

	rsa    syscall.RawSockaddrAny
	nfd    int
	errno  syscall.Errno
	accept func(uintptr) bool
}

var _ net.Listener = (*Listener)(nil)

// NewListener takes over ln, a *net.TCPListener: its socket becomes the
// Listener's, and ln is closed. (net's listener cannot wait for a raw
// accept: its SyscallConn's Read is not implemented, so the Listener holds
// the socket as an os.File, whose is.)
func NewListener(ln net.Listener) (*Listener, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, errors.New("rawio: not a TCP listener")
	}
	f, err := tl.File() // a duplicate, on the poller
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	l := &Listener{f: f, rc: rc, addr: ln.Addr()}
	l.accept = l.doAccept
	ln.Close()
	return l, nil
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.addr }

// Close closes the listening socket; a waiting Accept returns net.ErrClosed.
func (l *Listener) Close() error {
	l.closed.Store(true)
	if err := l.f.Close(); err != nil {
		return &net.OpError{Op: "close", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
	}
	return nil
}

// Accept returns the next connection, a *Sock.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptSock() }

// acceptBackoff bounds the wait between accepts that found no descriptor
// free (EMFILE): net/http's 5 ms doubling to 1 s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// AcceptSock is Accept. Out of descriptors or memory, it waits and tries
// again rather than failing (fasthttp's Serve would stop for good on any
// error other than a timeout); the listener's close ends it.
func (l *Listener) AcceptSock() (*Sock, error) {
	var delay time.Duration
	for {
		if err := l.rc.Read(l.accept); err != nil {
			if l.closed.Load() {
				err = net.ErrClosed // "use of closed network connection": fasthttp's end of Serve
			}
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: err}
		}
		if l.errno == 0 {
			return NewSock(l.nfd, rawSockaddrTCP(&l.rsa)), nil
		}
		err := os.NewSyscallError("accept4", l.errno)
		switch l.errno {
		case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM:
		default:
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: err}
		}
		delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
		if l.Backoff != nil {
			l.Backoff(err, delay)
		}
		time.Sleep(delay)
	}
}

// doAccept is one accept4 attempt; false: none waiting.
func (l *Listener) doAccept(fd uintptr) bool {
	for {
		n := uintptr(syscall.SizeofSockaddrAny)
		r, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, fd, uintptr(unsafe.Pointer(&l.rsa)), uintptr(unsafe.Pointer(&n)),
			syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		switch e {
		case syscall.EAGAIN:
			return false
		case syscall.EINTR, syscall.ECONNABORTED:
			continue // as net's accept: the next one
		}
		l.nfd, l.errno = int(r), e
		return true
	}
}

// rawSockaddrTCP is the TCP address in rsa, as accept4 filled it.
func rawSockaddrTCP(rsa *syscall.RawSockaddrAny) *net.TCPAddr {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		a := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: int(p[0])<<8 | int(p[1])}
	case syscall.AF_INET6:
		a := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		ta := &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: int(p[0])<<8 | int(p[1])}
		if a.Scope_id != 0 {
			ta.Zone = zone(int(a.Scope_id))
		}
		return ta
	}
	return &net.TCPAddr{}
}

// sockaddrTCP is sa as a *net.TCPAddr.
func sockaddrTCP(sa syscall.Sockaddr) *net.TCPAddr {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
	case *syscall.SockaddrInet6:
		a := &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
		if sa.ZoneId != 0 {
			a.Zone = zone(int(sa.ZoneId))
		}
		return a
	}
	return &net.TCPAddr{}
}

// zone names an IPv6 scope as net does: the interface's name, else its index.
func zone(index int) string {
	if ifi, err := net.InterfaceByIndex(index); err == nil {
		return ifi.Name
	}
	return strconv.Itoa(index)
}

// dupFd duplicates the descriptor under rc (close-on-exec; non-blocking like
// it: the flag is the socket's).
func dupFd(rc syscall.RawConn) (int32, error) {
	var fd int32
	var errno syscall.Errno
	err := rc.Control(func(f uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, f, syscall.F_DUPFD_CLOEXEC, 0)
		fd, errno = int32(r), e
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, os.NewSyscallError("fcntl", errno)
	}
	return fd, nil
}

// TCPConn turns s into a *net.TCPConn on the same socket (net.FileConn),
// for a caller that wants Go's own connection (proxy's io: std); s is
// closed.
func (s *Sock) TCPConn() (*net.TCPConn, error) {
	fd, err := s.detach()
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "tcp")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// DeferAccept is a net.ListenConfig Control that sets TCP_DEFER_ACCEPT on a
// listening socket: the kernel completes an accept only once the client's
// first bytes are in (HTTP and TLS clients speak first), so the Sock's
// first read finds them and the socket never goes on the poller. Without
// it the proxy, quick to accept, reads an empty socket for most new
// connections and polls each (bench/README.md, "Connection churn"). A
// client that connects and sends nothing is accepted after the SYN-ACK's
// first retransmission, about a second later, and then meets the read
// timeout as before. This is nginx's "deferred" and HAProxy's
// "defer-accept".
func DeferAccept(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, 1)
	}); err != nil {
		return err
	}
	return serr
}
