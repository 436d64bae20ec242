package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/proxy/internal/rawio"
)

// Idle keep-alive connections cost memory for what they might do: a
// goroutine blocked in a read (its stack, 8 KiB and more once it has served
// a request) and fasthttp's per-connection reader, writer and request
// context, about 22 KB in all (TestIdleConnMemory). An idler takes a plain listener's idle
// connections off that path: a connection that has waited for its next
// request for a whole parkTick (between one and two) is parked
// (rawio.Parker): its goroutine and buffers are released, and only the
// socket and its deadline remain, until the client sends again (a fresh
// goroutine serves it, fasthttp.Server.ServeConn) or the idle timeout
// passes (it is closed, as fasthttp closes an idle connection: no response).
//
// Only a connection between requests is parked: the head scan is at the
// start of a head and every byte read so far belonged to complete requests
// (headScan.atBoundary), so nothing of the stream is lost and the resumed
// connection starts a new count of requests (ConnRequestNum from 1, as the
// scan's). A request that has started arriving keeps its goroutine and
// ReadTimeout (slowloris protection is unchanged); so do TLS connections
// (the TLS state above the socket is not parked) and tunnels. A connection
// that never sent a request is not parked either: fasthttp answers its
// ReadTimeout with 408, which a parked connection could not.
//
// The hot path pays two atomic stores per request boundary; the tick's
// sweep over live connections wakes the idle ones with a past read
// deadline (clientConn.readIdle tells it from a real timeout: any deadline
// firing before the one asked for, there, means the connection has been
// idle since before the last tick; the lazy read deadline's early firing
// too). A wake that races with a request's arrival costs that request one
// re-arm of its deadline (rawio.Deadline.Rearm).
type idler struct {
	park    *rawio.Parker
	serve   func(net.Conn) error // fasthttp.Server.ServeConn
	raw     bool
	tick    atomic.Uint32 // sweeps so far, from 1
	maxLive func() int    // fasthttp's concurrency cap minus its current count

	released  int    // parked connections at the last release (sweep's)
	releaseAt uint32 // the tick of the release due; 0: none (sweep's)

	mu   sync.Mutex
	head *clientConn // live parkable connections (prev, next)
}

// parkTick is how often the idler looks for idle connections; one idle
// between one and two ticks is parked.
const parkTick = time.Second

// newIdler returns nil when parking is not available (not Linux). Its
// Parker's loop starts with Serve (Parker.Start).
func newIdler(serve func(net.Conn) error, raw bool) *idler {
	d := &idler{serve: serve, raw: raw}
	d.tick.Store(1)
	pk, err := rawio.NewParker(parkTick, d.resume, d.sweep)
	if err != nil {
		return nil
	}
	d.park = pk
	return d
}

// add registers c (a TCP connection kelpie's listener accepted: its Conn
// is a *rawio.Sock or a *net.TCPConn) for parking.
func (d *idler) add(c *clientConn) {
	c.idler = d
	d.mu.Lock()
	c.next = d.head
	if d.head != nil {
		d.head.prev = c
	}
	d.head = c
	c.listed = true
	d.mu.Unlock()
}

// forget takes c off the list (closed, parked or tunnelled).
func (d *idler) forget(c *clientConn) {
	d.mu.Lock()
	if c.listed {
		if c.prev != nil {
			c.prev.next = c.next
		} else {
			d.head = c.next
		}
		if c.next != nil {
			c.next.prev = c.prev
		}
		c.prev, c.next, c.listed = nil, nil, false
	}
	d.mu.Unlock()
}

// sweep wakes the connections that have waited for their next request
// since before the previous tick: their read fails with a past deadline,
// and readIdle returns the idle end that parks them.
func (d *idler) sweep() {
	t := d.tick.Add(1)
	past := time.Unix(1, 0)
	d.mu.Lock()
	for c := d.head; c != nil; c = c.next {
		if a := c.idleAt.Load(); a != 0 && t-a >= 2 {
			c.Conn.SetReadDeadline(past)
		}
	}
	d.mu.Unlock()
	d.release(t)
}

// release hands the memory parked connections left behind back to the OS
// once many have been parked since the last time. Their goroutines' stacks
// (fasthttp's worker pool keeps an idle worker for MaxIdleWorkerDuration,
// parkTick here) and fasthttp's pooled readers, writers and contexts are
// garbage only to the next two collections (sync.Pool keeps a victim
// generation), and an idle process allocates nothing that would start one:
// the runtime's forced collection comes every two minutes, and its
// scavenger returns freed pages slowly. A release is two collections and a
// scavenge, a few milliseconds of CPU for a heap of tens of megabytes, in
// its own goroutine, three ticks after the parked count has grown by a
// quarter and at least 1024 since the last: a steady state of connections
// parking and waking pays nothing. Called by sweep (the Parker's goroutine).
func (d *idler) release(tick uint32) {
	if d.releaseAt != 0 && tick >= d.releaseAt {
		d.releaseAt = 0
		go func() {
			runtime.GC()
			debug.FreeOSMemory()
		}()
	}
	n := d.park.Len()
	if n < d.released {
		d.released = n
	}
	if n-d.released >= max(1024, d.released/4) {
		d.released = n
		d.releaseAt = tick + 3
	}
}

// resume serves a parked connection that became readable: a Sock, which
// has no deadline yet (a fresh clientConn arms its own), or with io: std a
// TCPConn on its socket.
func (d *idler) resume(s *rawio.Sock) {
	var nc net.Conn = s
	if !d.raw {
		tc, err := s.TCPConn()
		if err != nil {
			return // s is closed: the client sees its connection end
		}
		nc = tc
	}
	c := newClientConn(nc, d.raw)
	c.resumed = true
	d.add(c)
	go d.serve(c)
}

// full reports whether a new connection would exceed the concurrency cap
// once the parked ones are counted: fasthttp counts only those it serves.
func (d *idler) full() bool {
	return d.park.Len() > 0 && d.maxLive != nil && d.park.Len() >= d.maxLive()
}

// waitsIdle reports whether c's next read waits for a request that has not
// started: the connection is parkable there.
func (c *clientConn) waitsIdle() bool {
	return c.idler != nil && c.scan.atBoundary() && (c.scan.reqs > 0 || c.resumed)
}

// readIdle is Read between requests on a parkable connection. When the
// idler's sweep cuts the wait short (a deadline earlier than the one asked
// for firing: the connection has been idle since before the last tick), it
// returns io.EOF with parking set: fasthttp then ends ServeConn quietly,
// as for a client that closed between requests, and Close parks the socket.
func (c *clientConn) readIdle(b []byte) (int, error) {
	c.idleAt.Store(c.idler.tick.Load())
	n, err := c.rw.Read(b)
	c.idleAt.Store(0)
	if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return n, err
	}
	if want := c.rd.Want(); !want.IsZero() && !time.Now().Before(want) {
		return n, err // the idle timeout itself
	}
	c.parking.Store(true)
	return 0, io.EOF
}

// Close closes the connection, or parks it when readIdle ended it idle.
func (c *clientConn) Close() error {
	if c.idler != nil {
		c.idler.forget(c)
		if c.parking.Swap(false) && c.idler.park.Park(c.Conn, c.rd.Want()) == nil {
			return nil
		}
	}
	return c.Conn.Close()
}

// parkingListener is a plain listener whose idle connections are parked;
// closing it closes the parked ones.
type parkingListener struct {
	listener
	idle *idler
}

func (l parkingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.accept()
		if err != nil {
			return nil, err
		}
		ok := parkable(c)
		if ok && l.idle.full() {
			c.Write(capReply)
			c.Close()
			continue
		}
		cc := newClientConn(c, l.raw)
		if ok {
			l.idle.add(cc)
		}
		return cc, nil
	}
}

// parkable reports whether the Parker can take c: a TCP socket.
func parkable(c net.Conn) bool {
	switch c.(type) {
	case *rawio.Sock, *net.TCPConn:
		return true
	}
	return false
}

// capReply answers a connection over the cap when parked connections fill
// it (fasthttp answers those over its own count).
var capReply = []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 34\r\n\r\nkelpie: too many open connections\n")

func (l parkingListener) Close() error {
	err := l.Listener.Close()
	l.idle.park.Close()
	return err
}

// parkedConns is the number of client connections parked now.
func (p *Proxy) parkedConns() int {
	if p.idle == nil {
		return 0
	}
	return p.idle.park.Len()
}
