package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/proxy/internal/rawio"
)

// ErrBadRoute is returned by New and SetRoutes for an unusable route set.
var ErrBadRoute = errors.New("bad route")

// Proxy is kelpie's HTTP/1.1 reverse proxy: it routes each request by Host and
// path prefix to an upstream, picks a backend from the upstream's pool and
// forwards the request over a pooled keep-alive connection, retrying on other
// backends as Upstream.Retries allows. Safe for concurrent use.
type Proxy struct {
	opts    Options
	log     *slog.Logger
	table   atomic.Pointer[table]
	conns   transports // each backend's transport, kept across reloads
	tunnels tunnelSet  // open upgraded connections (tunnel.go)
	server  *fasthttp.Server
	trusted []netip.Prefix

	idPrefix [16]byte      // random per process: X-Request-ID prefix
	idSeq    atomic.Uint64 // X-Request-ID counter
	logSeq   atomic.Uint64 // access log sampling
	retryAft []byte        // Retry-After value

	stickySecret []byte // random per process: HMAC key of sticky cookies without a Sticky.Secret

	// Parks the plain listener's idle connections (idle.go); nil where
	// parking is not available. Its epoll set is opened here, so that the
	// descriptors a running proxy holds do not change when Serve starts; its
	// goroutine starts with Serve, and Shutdown (closing the listener) ends
	// both.
	idle *idler
}

// New returns a Proxy serving routes. It does not listen; call Serve.
func New(o Options, routes []Route) (*Proxy, error) {
	o = o.withDefaults()
	if o.IO != IORaw && o.IO != IOStd {
		return nil, fmt.Errorf("proxy io mode %q: want %q or %q", o.IO, IORaw, IOStd)
	}
	p := &Proxy{opts: o, log: o.Logger}
	p.conns.std = o.IO == IOStd
	if _, err := rand.Read(p.idPrefix[:8]); err != nil {
		return nil, fmt.Errorf("request id seed: %w", err)
	}
	hex.Encode(p.idPrefix[:], p.idPrefix[:8])
	var err error
	if p.stickySecret, err = newStickyKey(); err != nil {
		return nil, err
	}
	secs := int64((o.RetryAfter + time.Second - 1) / time.Second)
	p.retryAft = strconv.AppendInt(nil, max(secs, 1), 10)
	for _, pr := range o.TrustedProxies {
		p.trusted = append(p.trusted, pr.Masked())
	}
	if err := p.SetRoutes(routes); err != nil {
		return nil, err
	}
	p.server = &fasthttp.Server{
		Handler:      p.ServeFastHTTP,
		ErrorHandler: p.parseError,
		// No Name: with NoDefaultServerHeader, kelpie adds no Server
		// header, to a backend's response or to its own.
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		ReadBufferSize:               o.MaxHeaderBytes + o.MaxURIBytes + 64,
		ReadTimeout:                  o.ReadTimeout,
		IdleTimeout:                  o.IdleTimeout,
		WriteTimeout:                 o.WriteTimeout,
		Concurrency:                  o.Concurrency,
		MaxRequestBodySize:           bodyPrefetch,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		LazyRequestTime:              true, // kelpie times requests itself: one clock read fewer
		CloseOnShutdown:              true,
		// An idle worker goroutine keeps its stack; parked connections
		// (idle.go) leave theirs idle, and they go after a tick, not 10 s.
		MaxIdleWorkerDuration: parkTick,
		// Off so that parseError can tell an unknown transfer coding (501)
		// from broken framing (400) by the value fasthttp quotes; fasthttp
		// logs such errors through Logger, which is at debug level only.
		SecureErrorLogMessage: false,
		// Header names reach the backend as the client spelled them;
		// kelpie's own lookups fold case (headers.go, delFold).
		DisableHeaderNamesNormalizing: true,
		Logger:                        fasthttpLogger{o.Logger},
	}
	if p.idle = newIdler(p.server.ServeConn, o.IO == IORaw); p.idle != nil {
		p.idle.maxLive = func() int { return p.opts.Concurrency - int(p.server.GetCurrentConcurrency()) }
	}
	return p, nil
}

// bodyPrefetch is how much of a request body fasthttp reads before the
// handler runs; the rest is streamed.
const bodyPrefetch = 64 << 10

// SetRoutes atomically replaces the route table. Requests already routed
// finish on the upstream they were routed to.
func (p *Proxy) SetRoutes(routes []Route) error {
	t, err := buildTable(routes)
	if err != nil {
		return err
	}
	p.table.Store(t)
	p.conns.retain(routes)
	return nil
}

// Serve accepts connections on ln and serves them until Shutdown. It blocks,
// and returns nil after a Shutdown.
//
// A listener from Listen hands out rawio.Socks (kelpie's own accept); with
// io: std they are turned into net's TCPConns.
func (p *Proxy) Serve(ln net.Listener) error {
	raw := p.opts.IO == IORaw
	if rl, ok := ln.(*rawio.Listener); ok && rl.Backoff == nil {
		rl.Backoff = func(err error, d time.Duration) {
			p.log.Warn("proxy: accept failed, retrying", "listen", ln.Addr().String(), "err", err, "retry_in", d)
		}
	}
	var l net.Listener = listener{ln, raw}
	if p.idle != nil {
		p.idle.park.Start()
		l = parkingListener{listener{ln, raw}, p.idle}
	}
	err := p.server.Serve(l)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("proxy serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting connections, closes idle keep-alive connections,
// marks responses in flight with Connection: close and waits for them to
// finish, up to ctx. It returns ctx.Err() if ctx ended first; the remaining
// connections are then left to their timeouts.
func (p *Proxy) Shutdown(ctx context.Context) error {
	return p.server.ShutdownWithContext(ctx)
}

// ServeFastHTTP handles one client request: validate, route, forward.
func (p *Proxy) ServeFastHTTP(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("proxy: panic serving request", "panic", r)
			p.reply(ctx, fasthttp.StatusBadGateway, "internal error")
			ctx.SetConnectionClose()
		}
		p.flushAfter(ctx)
	}()
	req := &ctx.Request
	// Requests are forwarded with the headers they came with: no default
	// Content-Type for a body that has none.
	req.Header.SetNoDefaultContentType(true)
	if status, msg := p.check(&req.Header); status != 0 {
		p.reject(ctx, status, msg)
		p.access(ctx, nil, nil, 0, start)
		return
	}
	if p.opts.HTTPSRedirectPort != 0 && !ctx.IsTLS() {
		p.redirectHTTPS(ctx)
		p.access(ctx, nil, nil, 0, start)
		return
	}
	rt := p.table.Load().match(req.Header.Host(), pathOf(req.Header.RequestURI()))
	if rt == nil {
		p.reply(ctx, fasthttp.StatusNotFound, "no route")
		p.access(ctx, nil, nil, 0, start)
		return
	}
	if isUpgrade(&req.Header) {
		b, retries := p.upgrade(ctx, rt.Upstream, start)
		p.access(ctx, rt.Upstream, b, retries, start)
		return
	}
	rb, status, msg := p.prepareBody(ctx)
	if status != 0 {
		p.reject(ctx, status, msg)
		p.access(ctx, rt.Upstream, nil, 0, start)
		return
	}
	peer := peerIP(ctx)
	key := p.clientKey(rt.Upstream, &req.Header, peer)
	p.rewriteRequest(req, peer, ctx.IsTLS())
	asHTTP11(ctx)
	b, retries := p.forward(ctx, rt.Upstream, rb, key, start)
	p.access(ctx, rt.Upstream, b, retries, start)
	rb.release()
}

// flushAfter makes fasthttp write the response as soon as the handler
// returns. A write deadline the handler sets does that; without one,
// fasthttp holds a response back while a pipelined next request is already
// buffered, and then waits for that request's body before writing it. The
// deadline is the one fasthttp would set itself at this point (none when
// WriteTimeout is off); the client connection's lazy deadlines make setting
// it cheap, and it is set only on those: a connection kelpie's listener did
// not make (a handler called with a bare RequestCtx) is left alone.
func (p *Proxy) flushAfter(ctx *fasthttp.RequestCtx) {
	if clientConnOf(ctx.Conn()) == nil {
		return
	}
	var wd time.Time
	if p.opts.WriteTimeout > 0 {
		wd = time.Now().Add(p.opts.WriteTimeout)
	}
	_ = ctx.SetWriteDeadline(wd)
}

// reject answers a request kelpie refuses to forward, and closes the
// connection: after a framing problem the rest of the stream is not trusted.
func (p *Proxy) reject(ctx *fasthttp.RequestCtx, status int, msg string) {
	p.reply(ctx, status, msg)
	ctx.SetConnectionClose()
}

// reply writes kelpie's own short plain-text error response.
func (p *Proxy) reply(ctx *fasthttp.RequestCtx, status int, msg string) {
	r := &ctx.Response
	r.Reset()
	r.SetStatusCode(status)
	r.Header.SetContentType("text/plain; charset=utf-8")
	r.Header.Set("Cache-Control", "no-store")
	if status == fasthttp.StatusServiceUnavailable {
		r.Header.SetBytesV("Retry-After", p.retryAft)
	}
	b := r.Body()[:0]
	b = append(b, "kelpie: "...)
	b = append(b, msg...)
	b = append(b, '\n')
	r.SetBodyRaw(b)
}

// parseError answers requests fasthttp could not parse (fasthttp closes the
// connection afterwards).
func (p *Proxy) parseError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	if status, msg, ok := parseErrorReason(err); ok {
		p.reply(ctx, status, msg)
		return
	}
	switch {
	case errors.Is(err, errBareLF):
		p.reply(ctx, fasthttp.StatusBadRequest, "bare LF in request head")
	case errors.As(err, &small):
		p.reply(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "request header too large")
	case errors.As(err, &ne) && ne.Timeout():
		p.reply(ctx, fasthttp.StatusRequestTimeout, "request timeout")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		p.reply(ctx, fasthttp.StatusRequestEntityTooLarge, "request body too large")
	default:
		p.reply(ctx, fasthttp.StatusBadRequest, "bad request")
	}
}

// access logs one sampled request.
func (p *Proxy) access(ctx *fasthttp.RequestCtx, up *Upstream, b *balancer.Backend, retries int, start time.Time) {
	al := p.opts.AccessLog
	if al == nil {
		return
	}
	if n := p.opts.AccessLogSample; n > 1 && p.logSeq.Add(1)%uint64(n) != 0 {
		return
	}
	upstream, backend := "", ""
	if up != nil {
		upstream = up.Pool.Name()
	}
	if b != nil {
		backend = b.Address()
	}
	al.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("method", string(ctx.Method())),
		slog.String("host", string(ctx.Request.Header.Host())),
		slog.String("uri", string(ctx.Request.Header.RequestURI())),
		slog.Int("status", ctx.Response.StatusCode()),
		slog.String("upstream", upstream),
		slog.String("backend", backend),
		slog.Int("retries", retries),
		slog.Bool("reached_backend", len(ctx.Response.Header.Peek(HeaderReachedBackend)) > 0),
		slog.String("client", ctx.RemoteAddr().String()),
		slog.String("request_id", string(peekFold(&ctx.Request.Header, hdrRequestID))),
		slog.Duration("duration", time.Since(start)),
	)
}

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug("fasthttp: " + fmt.Sprintf(format, args...))
}

// Match returns the route a request with this raw Host header and raw
// request target would take, or nil (404). It does not allocate.
func (p *Proxy) Match(host, requestURI []byte) *Route {
	return p.table.Load().match(host, pathOf(requestURI))
}

// PrepareRequest runs the header path of ServeFastHTTP on a parsed request:
// validation, then the upstream rewrite (hop-by-hop stripping, forwarding
// headers, request id). It returns 0 when the request would be forwarded, or
// the status kelpie would answer instead (the request is then left as is).
// peer is the TCP peer; tls says whether the client connection is TLS. It
// does not allocate for ordinary requests; benchmarks and tools use it.
func (p *Proxy) PrepareRequest(req *fasthttp.Request, peer netip.Addr, tls bool) int {
	req.Header.SetNoDefaultContentType(true)
	if status, _ := p.check(&req.Header); status != 0 {
		return status
	}
	p.rewriteRequest(req, peer, tls)
	return 0
}
