package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/metrics"
	"github.com/valyala/fasthttp"
)

var errBodyTooLarge = errors.New("request body exceeds the limit")

// reqBody wraps a streamed client request body on its way upstream. It
// records whether any of it was read (after that the request cannot be
// retried), enforces MaxBodyBytes on chunked bodies, keeps the client's read
// deadline rolling so long uploads are bounded per gap rather than in total,
// and replays the first chunk kelpie read ahead to check chunked framing.
type reqBody struct {
	src      io.Reader
	ctx      *fasthttp.RequestCtx
	limit    int64 // 0 = none
	n        int64
	idle     time.Duration
	armed    time.Time
	touched  bool
	tooLarge bool
	err      error // a client-side read error (not EOF)
	ahead    []byte
	buf      [4 << 10]byte
}

var reqBodyPool = sync.Pool{New: func() any { return new(reqBody) }}

func (r *reqBody) Read(b []byte) (int, error) {
	r.touched = true
	if len(r.ahead) > 0 {
		n := copy(b, r.ahead)
		r.ahead = r.ahead[n:]
		return n, nil
	}
	if r.idle > 0 {
		if now := time.Now(); now.Sub(r.armed) > r.idle/8 {
			r.armed = now
			_ = r.ctx.SetReadDeadline(now.Add(r.idle))
		}
	}
	n, err := r.src.Read(b)
	r.n += int64(n)
	if r.limit > 0 && r.n > r.limit {
		r.tooLarge = true
		return 0, errBodyTooLarge
	}
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// prepareBody puts a reqBody in front of a request's body stream. It refuses
// a Content-Length above MaxBodyBytes (413) and a chunked body whose first
// chunk is malformed (400), before anything goes upstream. Later framing
// errors abort the upstream request mid-body: kelpie re-frames bodies, so
// the backend sees a truncated request, never a smuggled one.
func (p *Proxy) prepareBody(ctx *fasthttp.RequestCtx) (*reqBody, int, string) {
	req := &ctx.Request
	cl := req.Header.ContentLength()
	if cl == 0 || cl == -2 || !req.IsBodyStream() {
		return nil, 0, ""
	}
	if lim := p.opts.MaxBodyBytes; lim > 0 && int64(cl) > lim {
		return nil, fasthttp.StatusRequestEntityTooLarge, "request body too large"
	}
	r := reqBodyPool.Get().(*reqBody)
	r.src, r.ctx, r.limit, r.idle = ctx.RequestBodyStream(), ctx, p.opts.MaxBodyBytes, p.opts.ReadTimeout
	r.armed = time.Now()
	if cl == -1 {
		n, err := io.ReadAtLeast(r.src, r.buf[:], 1)
		r.n = int64(n)
		switch {
		case err != nil && err != io.EOF && err != io.ErrUnexpectedEOF:
			r.release()
			return nil, fasthttp.StatusBadRequest, "invalid chunked body"
		case r.limit > 0 && r.n > r.limit:
			r.release()
			return nil, fasthttp.StatusRequestEntityTooLarge, "request body too large"
		}
		r.ahead = r.buf[:n]
	}
	req.SetBodyStream(r, cl)
	return r, 0, ""
}

func (r *reqBody) release() {
	if r == nil {
		return
	}
	r.src, r.ctx, r.ahead, r.err = nil, nil, nil, nil
	r.n, r.touched, r.tooLarge = 0, false, false
	reqBodyPool.Put(r)
}

// respBody streams an upstream response body to the client and closes the
// attempt when fasthttp's server is done with it: a clean end reports the
// attempt's result, a backend error mid-body reports a reset (the server
// then closes the client connection, so a truncated body is detectable).
type respBody struct {
	p      *Proxy
	resp   *fasthttp.Response
	src    io.Reader
	b      *balancer.Backend
	done   func(balancer.Result)
	result balancer.Result
	status int
	stats  *metrics.UpstreamStats
	start  time.Time
	client net.Conn
	wIdle  time.Duration
	armed  time.Time
	eof    bool
	rerr   error
}

var respBodyPool = sync.Pool{New: func() any { return new(respBody) }}

func (r *respBody) Read(b []byte) (int, error) {
	if r.wIdle > 0 && r.client != nil {
		if now := time.Now(); now.Sub(r.armed) > r.wIdle/8 {
			r.armed = now
			_ = r.client.SetWriteDeadline(now.Add(r.wIdle))
		}
	}
	n, err := r.src.Read(b)
	switch {
	case err == io.EOF:
		r.eof = true
	case err != nil:
		r.rerr = err
	}
	return n, err
}

// CloseWithError is called by fasthttp once the response is written or
// abandoned; werr is the client-side write error, if any.
func (r *respBody) CloseWithError(werr error) error {
	res := r.result
	if !r.eof && r.rerr != nil {
		res = balancer.ResultReset
	}
	if c, ok := r.src.(fasthttp.ReadCloserWithError); ok {
		_ = c.CloseWithError(werr)
	}
	r.done(res)
	release(r.stats, r.b, r.status, res)
	r.stats.Latency.Observe(time.Since(r.start))
	fasthttp.ReleaseResponse(r.resp)
	*r = respBody{}
	respBodyPool.Put(r)
	return nil
}
