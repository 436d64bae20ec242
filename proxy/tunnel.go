package proxy

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/proxy/internal/rawio"
)

// WebSocket and other Upgrade requests become tunnels. fasthttp's client
// cannot relay a 101, so kelpie dials the backend itself, writes the
// request, reads the answer, and only on a 101 naming the protocol asked
// for hijacks the client connection and copies bytes both ways. Any other
// answer is relayed as a normal response. fasthttp does not count hijacked
// connections (Server.Concurrency, Shutdown), so kelpie keeps its own set:
// for limits.max_tunnels, the tunnels_open gauge, idle and drain timeouts,
// and closing the rest at shutdown.

// maxRefusalBody caps the body of a non-101 answer to an upgrade request,
// which kelpie reads whole before relaying it.
const maxRefusalBody = 1 << 20

// tunnelBuffer is each direction's copy buffer: one TLS record's worth.
const tunnelBuffer = 16 << 10

// hijackWait is how long a tunnel's backend connection waits for fasthttp
// to hand over the client connection before it is given up.
const hijackWait = 10 * time.Second

// maxTunnelHead caps the backend's answer head to an upgrade request.
const maxTunnelHead = 16 << 10

// isUpgrade reports an HTTP/1.1 GET without a body that asks to switch
// protocols: an Upgrade header, and upgrade among the Connection options
// (RFC 9110 §7.8), whatever else they list. fasthttp's ConnectionUpgrade
// is false beside close ("Connection: Upgrade, close"), so the options
// are read here, from every Connection line.
func isUpgrade(h *fasthttp.RequestHeader) bool {
	if len(h.Peek(fasthttp.HeaderUpgrade)) == 0 {
		return false // every request but upgrades stops here
	}
	cl := h.ContentLength() // -2: no framing header, so no body for a GET
	if !h.IsGet() || !h.IsHTTP11() || (cl != 0 && cl != -2) {
		return false
	}
	upgrade := false
	for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
		forTokens(v, func(tok []byte) { upgrade = upgrade || bytes.EqualFold(tok, []byte("upgrade")) })
	}
	return upgrade
}

// tunnel is one upgraded connection pair.
type tunnel struct {
	client, backend net.Conn
	cc              *clientConn // under client, when kelpie's listener wrapped it
	ccQuiet         bool        // cc had nothing after the upgrade request
	b               *balancer.Backend
	last            atomic.Int64 // unix nanoseconds of the last byte either way
	once            sync.Once
}

// close ends both directions at once. fasthttp's hijacked connection
// ignores Close (fasthttp closes it when the hijack handler returns), so a
// past deadline is what wakes a read blocked on the client.
func (t *tunnel) close() {
	t.once.Do(func() {
		_ = t.client.SetDeadline(time.Unix(1, 0))
		t.client.Close()
		t.backend.Close()
	})
}

// tunnelSet is the Proxy's open tunnels.
type tunnelSet struct {
	mu    sync.Mutex
	n     int // reserved or open
	open  map[*tunnel]struct{}
	empty chan struct{} // closed while n == 0
	bufs  sync.Pool     // *[tunnelBuffer]byte, for pooledReader
}

// reserve counts a tunnel about to be set up; false when max are open.
func (s *tunnelSet) reserve(max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n >= max {
		return false
	}
	if s.n == 0 {
		s.empty = make(chan struct{})
	}
	s.n++
	return true
}

// release undoes a reserve, for a tunnel that ended or never opened.
func (s *tunnelSet) release(t *tunnel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t != nil {
		delete(s.open, t)
	}
	s.n--
	if s.n == 0 {
		close(s.empty)
	}
}

func (s *tunnelSet) add(t *tunnel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[*tunnel]struct{}{}
	}
	s.open[t] = struct{}{}
}

// Tunnels returns how many upgraded connections (WebSockets) are open or
// being set up.
func (p *Proxy) Tunnels() int {
	p.tunnels.mu.Lock()
	defer p.tunnels.mu.Unlock()
	return p.tunnels.n
}

// CloseTunnels waits until every tunnel has ended or ctx ends, then closes
// the ones left and waits for them to finish. It returns ctx.Err() when
// tunnels had to be closed. Call it after Shutdown: Shutdown does not wait
// for hijacked connections.
func (p *Proxy) CloseTunnels(ctx context.Context) error {
	s := &p.tunnels
	s.mu.Lock()
	if s.n == 0 {
		s.mu.Unlock()
		return nil
	}
	empty := s.empty
	s.mu.Unlock()
	select {
	case <-empty:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for t := range s.open {
		t.close()
	}
	s.mu.Unlock()
	<-empty // each tunnel's copies end at once on closed connections
	return ctx.Err()
}

// upgrade proxies an Upgrade request to a backend of up. A backend that
// cannot be reached is retried on another as far as up.Retries allows; the
// first answer is final.
func (p *Proxy) upgrade(ctx *fasthttp.RequestCtx, up *Upstream, start time.Time) (*balancer.Backend, int) {
	req := &ctx.Request
	if !p.tunnels.reserve(p.opts.MaxTunnels) {
		p.reply(ctx, fasthttp.StatusServiceUnavailable, "tunnel limit reached")
		return nil, 0
	}
	opened := false
	defer func() {
		if !opened {
			p.tunnels.release(nil)
		}
	}()
	proto := append([]byte(nil), req.Header.Peek(fasthttp.HeaderUpgrade)...)
	peer := peerIP(ctx)
	key := p.clientKey(up, &req.Header, peer)
	p.rewriteRequest(req, peer, ctx.IsTLS())
	req.Header.Set(fasthttp.HeaderConnection, "Upgrade")
	req.Header.SetBytesV(fasthttp.HeaderUpgrade, proto)
	head := append([]byte(nil), req.Header.Header()...)

	pool, stats := up.Pool, up.Stats
	var tried []*balancer.Backend
	var failed outcome
	attempts := 0
	for b := pool.Pick(key, nil); b != nil; b = pool.Pick(key, tried) {
		tried = append(tried, b)
		a, ok := p.begin(up, b)
		if !ok {
			continue
		}
		attempts++
		conn, br, resp, o := p.handshake(up, b, head)
		if o.status != 0 && !o.pass {
			p.finish(&a, o)
			failed = o
			if o.retry && attempts <= up.Retries {
				continue
			}
			break
		}
		if resp.StatusCode() != fasthttp.StatusSwitchingProtocols {
			conn.Close()
			out := &ctx.Response
			resp.CopyTo(out)
			cleanResponse(&out.Header, &resp.Header)
			fasthttp.ReleaseResponse(resp)
			p.finish(&a, o)
			stats.Latency.Observe(time.Since(start))
			return b, attempts - 1
		}
		if !bytes.EqualFold(resp.Header.Peek(fasthttp.HeaderUpgrade), proto) {
			conn.Close()
			fasthttp.ReleaseResponse(resp)
			o = outcome{result: balancer.ResultReset, status: fasthttp.StatusBadGateway, msg: "backend switched to another protocol"}
			p.finish(&a, o)
			failed = o
			break
		}
		opened = true
		t := &tunnel{backend: conn, b: b}
		answer := switchHead(&resp.Header, proto)
		fasthttp.ReleaseResponse(resp)
		ctx.Response.SetStatusCode(fasthttp.StatusSwitchingProtocols) // for the access log
		ctx.HijackSetNoResponse(true)
		idle, drain := up.tunnelTimes()
		// fasthttp skips the hijack if the client connection fails
		// before it (a deadline or flush error): then the tunnel's
		// attempt and reservation are let go here instead.
		var claimed atomic.Bool
		orphan := time.AfterFunc(hijackWait, func() {
			if claimed.CompareAndSwap(false, true) {
				conn.Close()
				p.tunnels.release(nil)
				p.finish(&a, outcome{result: balancer.ResultLocal})
			}
		})
		if cc := clientConnOf(ctx.Conn()); cc != nil {
			t.cc, t.ccQuiet = cc, cc.leaveHTTP()
		}
		ctx.Hijack(func(c net.Conn) {
			orphan.Stop()
			if !claimed.CompareAndSwap(false, true) {
				return // fasthttp closes c
			}
			t.client = c
			p.tunnels.add(t)
			stats.Tunnels.Add(1)
			p.runTunnel(t, br, answer, idle, drain)
			stats.Tunnels.Add(-1)
			p.tunnels.release(t)
			p.finish(&a, backendAnswer(fasthttp.StatusSwitchingProtocols))
		})
		return b, attempts - 1
	}
	p.replyFailure(ctx, failed, nil, stats)
	stats.Latency.Observe(time.Since(start))
	return nil, max(attempts-1, 0)
}

// handshake dials b, sends the upgrade request head and reads the answer.
// A failure comes back as a failed outcome (status set, pass false);
// otherwise the connection, its reader (which may hold tunnel bytes past
// the head) and the answer, with a pass outcome.
func (p *Proxy) handshake(up *Upstream, b *balancer.Backend, head []byte) (net.Conn, *bufio.Reader, *fasthttp.Response, outcome) {
	set := up.settings()
	dial := up.dial(set)
	if set.tls != nil {
		dial = dialTLS(dial, set.tls)
	}
	conn, err := dial(b.Address(), set.connect)
	if err != nil {
		return nil, nil, nil, classify(&dialError{err}, wire{}, true, nil)
	}
	_ = conn.SetDeadline(time.Now().Add(set.response))
	if _, err := conn.Write(head); err != nil {
		conn.Close()
		return nil, nil, nil, classify(err, wire{sent: true}, false, nil)
	}
	br := bufio.NewReaderSize(conn, maxTunnelHead)
	resp := fasthttp.AcquireResponse()
	resp.Header.SetNoDefaultContentType(true)
	if err := resp.ReadLimitBody(br, maxRefusalBody); err != nil {
		conn.Close()
		fasthttp.ReleaseResponse(resp)
		return nil, nil, nil, classify(err, wire{sent: true, gotBytes: br.Buffered() > 0}, false, nil)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, resp, backendAnswer(resp.StatusCode())
}

// switchHead is the 101 kelpie sends the client: the backend's, with its
// hop-by-hop headers dropped except the two the switch needs.
func switchHead(h *fasthttp.ResponseHeader, proto []byte) []byte {
	b := append([]byte(nil), "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "...)
	b = append(b, proto...)
	b = append(b, "\r\n"...)
	for k, v := range h.All() {
		if isHopByHop(k) || bytes.EqualFold(k, []byte(fasthttp.HeaderContentLength)) {
			continue
		}
		b = append(b, k...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// isHopByHop reports the headers that belong to one connection.
func isHopByHop(k []byte) bool {
	for _, h := range [...]string{"Connection", "Upgrade", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding"} {
		if bytes.EqualFold(k, []byte(h)) {
			return true
		}
	}
	return false
}

// runTunnel answers the client with the 101, then copies both ways until
// both directions have ended, the tunnel sits idle past idle, or its
// backend has been draining or gone for drain. It closes both connections.
func (p *Proxy) runTunnel(t *tunnel, br *bufio.Reader, answer []byte, idle, drain time.Duration) {
	defer t.close()
	t.last.Store(time.Now().UnixNano())
	if _, err := t.client.Write(answer); err != nil {
		return
	}
	// The handshake's reader is only needed for tunnel bytes that came
	// with the 101; without any, it is dropped (16 KiB per tunnel).
	// A quiet backend holds no buffer when it is read with raw system
	// calls (a plain one, io: raw): 16 KiB less per idle tunnel.
	var fromBackend halfReader
	if r := rawio.New(t.backend); br.Buffered() == 0 && r != nil && p.opts.IO == IORaw {
		fromBackend = p.tunnels.pooledReader(r)
	} else if br.Buffered() == 0 {
		fromBackend = p.tunnels.reader(t.backend)
	} else {
		fromBackend = p.tunnels.reader(br)
	}
	br = nil
	// The watch is a timer, not a goroutine, and the connection's own
	// goroutine copies one direction: two goroutines per tunnel.
	w := &tunnelWatch{p: p, t: t, idle: idle, drain: drain, every: watchEvery(idle, drain)}
	w.timer = time.AfterFunc(w.every, w.check)
	defer w.stop()
	var back sync.WaitGroup
	back.Go(func() { copyHalf(t, t.client, fromBackend) })
	copyHalf(t, t.backend, p.tunnels.clientReader(t, p.server.ReadBufferSize))
	back.Wait()
}

// tunnelTimes returns the upstream's tunnel idle and drain timeouts with
// defaults applied.
func (u *Upstream) tunnelTimes() (idle, drain time.Duration) {
	idle, drain = u.TunnelIdle, u.TunnelDrain
	if idle <= 0 {
		idle = DefaultTunnelIdle
	}
	if drain <= 0 {
		drain = DefaultTunnelDrain
	}
	return idle, drain
}
