package proxy

import (
	"errors"
	"io"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/metrics"
	"github.com/valyala/fasthttp"
)

// failure is how one failed attempt is answered and counted.
type failure struct {
	result balancer.Result
	status int    // what the client gets if this is the last attempt
	msg    string // kelpie's short error body
	retry  bool   // another backend may be tried
	stale  bool   // a reused idle connection the backend had closed: retry the same backend on a fresh one
	client bool   // the client's fault (body too large, body read error): no retry, close
}

// idempotent methods may be re-sent after a reset, a timeout or a gateway
// status (RFC 9110 section 9.2.2).
func idempotent(h *fasthttp.RequestHeader) bool {
	m := h.Method()
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE":
		return true
	}
	return false
}

// maxStaleRetries bounds the free retries on the same backend after a
// reused connection turned out closed by the backend. More than one is
// needed: CloseIdleConnections cannot stop a concurrent request from handing
// back another connection the backend has just closed, which the retry may
// then take (seen with backends that close after every few requests without
// Connection: close; cmd/kelpie TestFaultStaleKeepAliveRace). Each such
// failure discards a dead pooled connection and only a reused connection
// can be stale, so the loop ends on the first fresh one.
const maxStaleRetries = 3

// maxTriedOnStack is how many tried backends a request keeps without
// allocating: retries plus backends skipped by a drain or an open breaker.
const maxTriedOnStack = 8

// forward runs attempts on backends of up until one answers or the retry
// budget is spent, and writes the response (or kelpie's error) to ctx.
// It returns the backend of the last attempt (nil when none was made) and
// how many retries the request took, for the access log.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, up *Upstream, rb *reqBody, key uint64, start time.Time) (last *balancer.Backend, retries int) {
	pool := up.Pool
	stats := up.Stats
	req := &ctx.Request
	idem := idempotent(&req.Header)
	var triedBuf [maxTriedOnStack]*balancer.Backend
	tried := triedBuf[:0] // Pool.Pick does not keep it: stays on the stack
	attempts, staleRetries := 0, 0
	var lastErr *failure
	var lastF failure
	b := pool.Pick(key, tried)
	for b != nil {
		if !b.Acquire() {
			tried = append(tried, b)
			b = pool.Pick(key, tried)
			continue
		}
		done, err := b.Admit()
		if err != nil {
			b.Release(balancer.ResultLocal)
			tried = append(tried, b)
			b = pool.Pick(key, tried)
			continue
		}
		if attempts > 0 {
			stats.Retries.Add(1)
		}
		attempts++
		last = b
		hc := client(up, b)
		resp := fasthttp.AcquireResponse()
		err = hc.Do(req, resp)
		if err == nil {
			status := resp.StatusCode()
			res := balancer.ResultOK
			if status == 502 || status == 503 || status == 504 {
				res = balancer.ResultGatewayStatus
				if idem && !rb.wasTouched() && attempts <= up.Retries {
					if next := pool.Pick(key, append(tried, b)); next != nil {
						_ = resp.CloseBodyStream()
						fasthttp.ReleaseResponse(resp)
						done(res)
						release(stats, b, status, res)
						tried = append(tried, b)
						b = next
						continue
					}
				}
			}
			if err = bufferBody(&ctx.Response, resp); err == nil {
				p.respond(ctx, resp, b, done, res, status, stats, start)
				return last, attempts - 1 + staleRetries
			}
			// The body broke off before any of it reached the client: a
			// failed attempt like any other, retried where that is safe.
			_ = resp.CloseBodyStream() // not read to the end: the connection is dropped
		}
		f := classify(err, resp, idem, rb)
		fasthttp.ReleaseResponse(resp)
		done(f.result)
		release(stats, b, f.status, f.result)
		lastF = f
		lastErr = &lastF
		if f.stale && staleRetries < maxStaleRetries {
			staleRetries++
			stats.Retries.Add(1)
			attempts--                // a free retry: it does not use the budget
			hc.CloseIdleConnections() // its siblings were likely closed too
			continue                  // same backend, fresh connection
		}
		tried = append(tried, b)
		if !f.retry || attempts > up.Retries {
			break
		}
		b = pool.Pick(key, tried)
	}
	stats.Latency.Observe(time.Since(start))
	switch {
	case lastErr == nil:
		stats.Unavailable.Add(1)
		p.reply(ctx, fasthttp.StatusServiceUnavailable, "no backend available")
	case lastErr.client:
		p.reject(ctx, lastErr.status, lastErr.msg)
	default:
		p.reply(ctx, lastErr.status, lastErr.msg)
		if rb != nil {
			// Part of the body may still be unread; do not drain it.
			ctx.SetConnectionClose()
		}
	}
	return last, max(attempts-1, 0) + staleRetries
}

// release ends an attempt on b: the backend's counters and the upstream's
// count of status (kelpie's own 502/504 for errors; 0 when none).
func release(stats *metrics.UpstreamStats, b *balancer.Backend, status int, r balancer.Result) {
	b.Release(r)
	if r != balancer.ResultLocal {
		stats.CountCode(b, status)
	}
}

// respond hands a backend's response to the client. A small body is in out
// already (bufferBody) and the attempt is closed here; a larger one is
// streamed, copied by fasthttp after the handler returns, and the attempt is
// closed when that copy ends (respBody.CloseWithError).
func (p *Proxy) respond(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, b *balancer.Backend,
	done func(balancer.Result), res balancer.Result, status int, stats *metrics.UpstreamStats, start time.Time) {
	out := &ctx.Response
	resp.Header.CopyTo(&out.Header)
	out.Header.SetNoDefaultContentType(true)
	cleanResponse(&out.Header)
	stream := resp.BodyStream()
	if stream == nil {
		// Read whole by bufferBody, or no body (HEAD, 1xx, 204, 304): then
		// keep the backend's framing headers.
		out.SkipBody = len(out.Body()) == 0
		done(res)
		release(stats, b, status, res)
		stats.Latency.Observe(time.Since(start))
		fasthttp.ReleaseResponse(resp)
		return
	}
	r := respBodyPool.Get().(*respBody)
	*r = respBody{p: p, resp: resp, src: stream, b: b, done: done, result: res, status: status,
		stats: stats, start: start, client: ctx.Conn(), wIdle: p.opts.WriteTimeout}
	cl := resp.Header.ContentLength()
	if cl < 0 {
		cl = -1
	}
	out.SetBodyStream(r, cl)
}

// maxBufferedBody is the largest response body kelpie reads whole before
// answering, rather than streaming it through. A small body usually arrives
// with its head, so buffering costs no wait; it saves the server side of
// fasthttp's streaming (1.9 % of the CPU per request, paired A/B), returns the
// backend connection before the client is written to, and a body that
// breaks off becomes a clean, retryable failure instead of a truncated
// response. Bodies above it, and chunked ones, stream with bounded memory.
const maxBufferedBody = 16 << 10

// bufferBody reads a streamed response body of known length up to
// maxBufferedBody into out's body and closes resp's stream (the connection
// goes back to the pool). Larger and chunked bodies are left streaming. On
// an error the stream is left open for the caller to discard.
func bufferBody(out, resp *fasthttp.Response) error {
	stream := resp.BodyStream()
	cl := resp.Header.ContentLength()
	if stream == nil || cl < 0 || cl > maxBufferedBody {
		return nil
	}
	buf := out.SwapBody(nil) // out's pooled body buffer: read straight into it
	buf = slices.Grow(buf[:0], cl)[:cl]
	n := 0
	for {
		// Until io.EOF (fasthttp's stream returns it with the last byte):
		// only a stream read to its end gives its connection back to the
		// pool when closed; any other is dropped.
		m, err := stream.Read(buf[n:])
		n += m
		if err == io.EOF && n == cl {
			break
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			out.SwapBody(buf[:0])
			return err
		}
	}
	out.SwapBody(buf)
	return resp.CloseBodyStream()
}

// classify maps a failed attempt to its result, the client's status and
// whether it may be retried elsewhere.
func classify(err error, resp *fasthttp.Response, idem bool, rb *reqBody) failure {
	var conn *upConn
	if a, ok := resp.LocalAddr().(*connAddr); ok {
		conn = a.c
	}
	touched := rb.wasTouched()
	var de *dialError
	switch {
	case rb != nil && rb.tooLarge:
		return failure{result: balancer.ResultLocal, status: fasthttp.StatusRequestEntityTooLarge, msg: "request body too large", client: true}
	case rb != nil && rb.err != nil:
		return failure{result: balancer.ResultLocal, status: fasthttp.StatusBadRequest, msg: "request body could not be read", client: true}
	case errors.As(err, &de):
		return failure{result: balancer.ResultConnectFailed, status: fasthttp.StatusBadGateway, msg: "cannot connect to backend", retry: true}
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return failure{result: balancer.ResultLocal, status: fasthttp.StatusServiceUnavailable, msg: "backend connection limit reached", retry: true}
	case errors.Is(err, fasthttp.ErrTimeout) || os.IsTimeout(err):
		return failure{result: balancer.ResultTimeout, status: fasthttp.StatusGatewayTimeout, msg: "backend timed out", retry: idem && !touched}
	}
	if conn != nil && conn.requests > 1 && !conn.gotBytes && closedEarly(err) && idem && !touched {
		return failure{result: balancer.ResultLocal, status: fasthttp.StatusBadGateway, msg: "backend closed the connection", retry: true, stale: true}
	}
	msg := "backend connection failed"
	if conn != nil && conn.gotBytes {
		msg = "bad response from backend"
	}
	return failure{result: balancer.ResultReset, status: fasthttp.StatusBadGateway, msg: msg, retry: idem && !touched}
}

// closedEarly reports errors of a connection the peer closed or reset.
func closedEarly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF)
}

func (r *reqBody) wasTouched() bool { return r != nil && r.touched }
