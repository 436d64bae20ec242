package rawio

import (
	"container/heap"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Parker holds idle TCP connections without a goroutine each: a parked
// connection is an fd on the Parker's own epoll set (level-triggered, one
// shot) and a deadline, until it becomes readable (Resume gets it back, a
// new Sock on the same socket) or its deadline passes (the Parker closes
// it). Nothing of Go's is kept for it but its peer's address: a Sock hands
// over its descriptor (closing its os.File first if it was on the
// netpoller, after duplicating the descriptor), a *net.TCPConn is
// duplicated and closed (its netFD and the runtime's poll descriptor, some
// 700 bytes with the allocator's slack). A resumed Sock costs no system
// call until it has to wait. One goroutine, the Parker's
// loop, waits on the set for all of them; it also calls Tick every period,
// which is how the caller learns which connections have been idle long
// enough to park ("A Million WebSockets and Go": a goroutine parked in a
// read costs its stack, 8 KiB and up, and a connection in a server's read
// loop keeps its buffers too).
type Parker struct {
	// Resume takes back a connection that became readable (data, its end or
	// an error), in the Parker's goroutine: it must not block.
	Resume func(*Sock)
	// Tick runs in the Parker's goroutine every Period.
	Tick   func()
	Period time.Duration

	epfd, wakeR, wakeW int
	n                  atomic.Int64 // parked connections
	wakeAt             atomic.Int64 // unix ns the loop sleeps until
	done               chan struct{}

	mu      sync.Mutex
	conns   map[int32]parked // by the duplicated fd
	dl      deadlines
	seq     uint64
	started bool
	closed  bool
}

type parked struct {
	seq      uint64
	deadline int64 // unix ns; 0: none
	// The peer's address, for the resumed Sock: by value, since a
	// *net.TCPAddr kept for every parked connection pins the span it was
	// allocated in among the connection's freed objects.
	raddr netip.AddrPort
}

// NewParker returns a Parker whose loop runs once Start is called (so that
// resume and tick may use the Parker).
func NewParker(period time.Duration, resume func(*Sock), tick func()) (*Parker, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, err
	}
	pk := &Parker{Resume: resume, Tick: tick, Period: period, epfd: epfd, wakeR: p[0], wakeW: p[1],
		done: make(chan struct{}), conns: make(map[int32]parked)}
	return pk, nil
}

// Start runs the loop; again, or after Close, it does nothing.
func (p *Parker) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.closed {
		return
	}
	p.started = true
	go p.loop()
}

// Len is the number of parked connections.
func (p *Parker) Len() int { return int(p.n.Load()) }

// errParkerClosed: Park after Close.
var errParkerClosed = errors.New("parker closed")

// Park parks c, a *Sock or a *net.TCPConn, until it is readable or
// deadline (zero: none) passes; c is closed either way (its socket is not,
// when parked). A Sock hands its descriptor over as it is; a TCPConn's is
// duplicated, and the TCPConn closed. On an error a TCPConn is not parked
// and stays the caller's to close; a Sock's socket is closed.
func (p *Parker) Park(c net.Conn, deadline time.Time) error {
	var raddr netip.AddrPort
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		raddr = a.AddrPort()
	}
	switch c := c.(type) {
	case *Sock:
		fd, err := c.detach()
		if err != nil {
			return err
		}
		if err := p.park(int32(fd), deadline, raddr); err != nil {
			syscall.Close(fd)
			return err
		}
		return nil
	case *net.TCPConn:
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		fd, err := dupFd(rc)
		if err != nil {
			return err
		}
		if err := p.park(fd, deadline, raddr); err != nil {
			syscall.Close(int(fd))
			return err
		}
		c.Close()
		return nil
	}
	return errors.New("rawio: parking needs a TCP connection")
}

func (p *Parker) park(fd int32, deadline time.Time, raddr netip.AddrPort) error {
	var dl int64
	if !deadline.IsZero() {
		dl = deadline.UnixNano()
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errParkerClosed
	}
	p.seq++
	p.conns[fd] = parked{seq: p.seq, deadline: dl, raddr: raddr}
	if dl != 0 {
		if len(p.dl) > 2*len(p.conns)+64 {
			p.compact()
		}
		heap.Push(&p.dl, deadlineEntry{at: dl, fd: fd, seq: p.seq})
	}
	p.n.Add(1)
	// Registered under the lock: the loop finds the entry for any event.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: fd}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
		delete(p.conns, fd)
		p.n.Add(-1)
		p.mu.Unlock()
		return err
	}
	p.mu.Unlock()
	if dl != 0 && dl < p.wakeAt.Load() {
		p.wake()
	}
	return nil
}

// Close stops the loop and closes every parked connection. Park fails
// afterwards, and Resume is not called once Close has returned.
func (p *Parker) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	started := p.started
	p.mu.Unlock()
	if started {
		p.wake()
		<-p.done
	}
	p.mu.Lock()
	for fd := range p.conns {
		delete(p.conns, fd)
		syscall.Close(int(fd))
	}
	p.n.Store(0)
	p.mu.Unlock()
	syscall.Close(p.wakeR)
	syscall.Close(p.wakeW)
	return syscall.Close(p.epfd)
}

func (p *Parker) wake() {
	b := [1]byte{1}
	syscall.Write(p.wakeW, b[:]) // EAGAIN: a wake-up is pending anyway
}

// loop waits for readiness, deadlines and ticks until Close.
func (p *Parker) loop() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	nextTick := time.Now().Add(p.Period)
	for {
		wait := time.Until(nextTick)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		if len(p.dl) > 0 {
			wait = min(wait, time.Duration(p.dl[0].at-time.Now().UnixNano()))
		}
		p.mu.Unlock()
		wait = max(wait, 0)
		p.wakeAt.Store(time.Now().Add(wait).UnixNano())
		ms := int((wait + time.Millisecond - 1) / time.Millisecond)
		n, err := syscall.EpollWait(p.epfd, events, ms)
		p.wakeAt.Store(0)
		if err != nil && err != syscall.EINTR {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == p.wakeR {
				var b [64]byte
				syscall.Read(p.wakeR, b[:])
				continue
			}
			p.readable(ev.Fd)
		}
		now := time.Now()
		p.expire(now.UnixNano())
		if !now.Before(nextTick) {
			if p.Tick != nil {
				p.Tick()
			}
			nextTick = now.Add(p.Period)
		}
	}
}

// readable hands a parked connection back.
func (p *Parker) readable(fd int32) {
	p.mu.Lock()
	e, ok := p.conns[fd]
	if ok {
		delete(p.conns, fd)
		p.n.Add(-1)
		// Off the set before the fd is closed: the set holds the socket,
		// not the fd number, and the socket lives on in the new conn.
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	}
	closed := p.closed
	p.mu.Unlock()
	if !ok {
		return
	}
	if closed {
		syscall.Close(int(fd))
		return
	}
	p.Resume(NewSock(int(fd), net.TCPAddrFromAddrPort(e.raddr)))
}

// expire closes the parked connections whose deadline is past.
func (p *Parker) expire(now int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.dl) > 0 && p.dl[0].at <= now {
		d := heap.Pop(&p.dl).(deadlineEntry)
		e, ok := p.conns[d.fd]
		if !ok || e.seq != d.seq {
			continue // resumed since; the fd may be parked again under a later seq
		}
		delete(p.conns, d.fd)
		p.n.Add(-1)
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(d.fd), nil)
		syscall.Close(int(d.fd))
	}
}

// compact drops the deadlines of connections resumed since they were
// parked, which otherwise stay until they come up: a connection parked again
// and again within its idle timeout would leave one each time.
func (p *Parker) compact() {
	p.dl = p.dl[:0]
	for fd, e := range p.conns {
		if e.deadline != 0 {
			p.dl = append(p.dl, deadlineEntry{at: e.deadline, fd: fd, seq: e.seq})
		}
	}
	heap.Init(&p.dl)
}

// deadlines is a min-heap of parked connections' deadlines; entries of
// connections resumed since are dropped when they come up (seq).
type deadlines []deadlineEntry

type deadlineEntry struct {
	at  int64
	fd  int32
	seq uint64
}

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].at < d[j].at }
func (d deadlines) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *deadlines) Push(x any)        { *d = append(*d, x.(deadlineEntry)) }
func (d *deadlines) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}
