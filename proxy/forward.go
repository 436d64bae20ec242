package proxy

import (
	"io"
	"slices"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/metrics"
	"github.com/valyala/fasthttp"
)

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
// how many retries the request took. That one count feeds both the access
// log and Upstream.Stats.Retries, so the two agree.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, up *Upstream, rb *reqBody, key uint64, start time.Time) (last *balancer.Backend, retries int) {
	pool, stats := up.Pool, up.Stats
	idem := idempotent(&ctx.Request.Header)
	var triedBuf [maxTriedOnStack]*balancer.Backend
	tried := triedBuf[:0]   // Pool.Pick does not keep it: stays on the stack
	var failed outcome      // the last failed attempt's outcome; zero status while none failed
	attempts, stale := 0, 0 // stale retries do not use the budget
	noSlot := 0             // nor do backends without a connection to spare
	answered, streaming := false, false
	pin := p.pinned(ctx, up)
	for b := pin.first(pool, key); b != nil; {
		a, ok := pin.begin(p, up, b)
		if !ok {
			tried = append(tried, b)
			b = pool.Pick(key, tried)
			continue
		}
		attempts++
		last = b
		resp := fasthttp.AcquireResponse()
		var o outcome
		if attempts == 1 && up.hedging() && idem && rb == nil {
			var other *balancer.Backend
			if o, resp, other = p.hedge(ctx, up, &a, resp, key, tried); other != nil {
				tried = append(tried, other)
			}
			b, last = a.b, a.b
		} else {
			o = p.send(ctx, &a, resp, idem, rb)
		}
		if o.noSlot {
			noSlot++ // bounded: the backend joins tried below
		}
		var next *balancer.Backend
		if o.retry && attempts-stale-noSlot <= up.Retries {
			next = pool.Pick(key, append(tried, b))
		}
		if o.pass && next == nil {
			if o.result == balancer.ResultGatewayStatus {
				stats.Failed.Add(1)
			}
			answered, streaming = true, p.respond(ctx, a, resp, o, stats, start)
			break
		}
		_ = resp.CloseBodyStream() // unread: the connection is dropped, not pooled
		fasthttp.ReleaseResponse(resp)
		ctx.Response.ResetBody() // a retried gateway status's body, read by bufferBody
		p.finish(&a, o)
		if !o.pass { // a retried gateway status is no failure to report
			o.sent = o.sent || failed.sent // any attempt that reached a backend may have run
			failed = o
		}
		if o.stale && stale < maxStaleRetries {
			stale++
			a.t.CloseIdleConnections() // its siblings were likely closed too
			continue                   // same backend, fresh connection
		}
		tried = append(tried, b)
		b = next
	}
	if !answered {
		p.replyFailure(ctx, failed, rb, stats)
	} else {
		p.stickyReply(ctx, up, last, &pin)
	}
	if retries = max(attempts-1, 0); retries > 0 {
		stats.Retries.Add(uint64(retries))
	}
	if !streaming { // else respBody observes it when the body is done
		stats.Latency.Observe(time.Since(start))
	}
	return last, retries
}

// send runs the attempt's request through its transport. A response comes
// back as a pass outcome (a small body read whole into ctx's response by
// bufferBody), with retry set for a gateway status that may be retried
// elsewhere; a failure comes back classified.
func (p *Proxy) send(ctx *fasthttp.RequestCtx, a *attempt, resp *fasthttp.Response, idem bool, rb *reqBody) outcome {
	start := time.Now()
	w, err := a.t.Do(&ctx.Request, resp)
	a.rtt = time.Since(start)
	return p.outcomeOf(ctx, resp, w, err, idem, rb)
}

// outcomeOf is send's verdict on one transport call.
func (p *Proxy) outcomeOf(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, w wire, err error, idem bool, rb *reqBody) outcome {
	if err == nil {
		if err = bufferBody(&ctx.Response, resp); err == nil {
			o := backendAnswer(resp.StatusCode())
			o.retry = o.result == balancer.ResultGatewayStatus && idem && !rb.wasTouched()
			return o
		}
		// The body broke off before any of it reached the client: a failed
		// attempt like any other, retried where that is safe.
		w = wire{sent: true, gotBytes: true}
	}
	return classify(err, w, idem, rb)
}

// HeaderReachedBackend is set ("true") on kelpie's own 502 and 504 answers
// when the request, or part of it, was sent to a backend before the attempt
// failed: the backend may have acted on it (a POST answered 502 after a
// reset may well have run). Without it, no backend saw the request.
const HeaderReachedBackend = "X-Kelpie-Reached-Backend"

// replyFailure answers a request no backend answered: 503 when no attempt
// was made, else kelpie's error for the last failure.
func (p *Proxy) replyFailure(ctx *fasthttp.RequestCtx, failed outcome, rb *reqBody, stats *metrics.UpstreamStats) {
	switch {
	case failed.status == 0:
		stats.Unavailable.Add(1)
		stats.Failed.Add(1)
		p.reply(ctx, fasthttp.StatusServiceUnavailable, "no backend available")
	case failed.client:
		p.reject(ctx, failed.status, failed.msg)
	default:
		stats.Failed.Add(1)
		p.reply(ctx, failed.status, failed.msg)
		if failed.sent {
			// The request reached a backend and may have run there: a
			// client must not assume a failed POST did nothing.
			ctx.Response.Header.Set(HeaderReachedBackend, "true")
		}
		if rb != nil {
			// Part of the body may still be unread; do not drain it.
			ctx.SetConnectionClose()
		}
	}
}

// respond hands a backend's response to the client and reports whether its
// body is still streaming. A small body is in ctx's response already
// (bufferBody) and the attempt finishes here; a larger one is streamed,
// copied by fasthttp after the handler returns, and the attempt finishes
// when that copy ends (respBody.CloseWithError).
func (p *Proxy) respond(ctx *fasthttp.RequestCtx, a attempt, resp *fasthttp.Response, o outcome, stats *metrics.UpstreamStats, start time.Time) bool {
	out := &ctx.Response
	resp.Header.CopyTo(&out.Header)
	out.Header.SetNoDefaultContentType(true)
	cleanResponse(&out.Header, &resp.Header)
	stream := resp.BodyStream()
	if stream == nil {
		// Read whole by bufferBody, or no body (HEAD, 1xx, 204, 304): then
		// keep the backend's framing headers.
		out.SkipBody = len(out.Body()) == 0
		fasthttp.ReleaseResponse(resp)
		p.finish(&a, o)
		return false
	}
	r := respBodyPool.Get().(*respBody)
	*r = respBody{p: p, a: a, o: o, resp: resp, src: stream, stats: stats, start: start,
		client: ctx.Conn(), wIdle: p.opts.WriteTimeout}
	cl := resp.Header.ContentLength()
	if cl < 0 {
		cl = -1
	}
	out.SetBodyStream(r, cl)
	return true
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

func (r *reqBody) wasTouched() bool { return r != nil && r.touched }
