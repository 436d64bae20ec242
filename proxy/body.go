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
// and replays the start of a chunked body kelpie read ahead to check its
// framing.
//
// It never lets a truncated body look complete. fasthttp's chunked reader
// returns io.EOF where it could not read a trailer section (the client's
// connection ended after "0\r\n" without the final CRLF, or a trailer line
// ended in a bare LF); fasthttp's client would then send the backend a
// complete message (its own last chunk). At every end of the body, read asks
// the client connection whether its stream ended inside this request's body
// (clientConn.bodyErr, which also turns an end at a chunk boundary or short
// of Content-Length into io.ErrUnexpectedEOF before fasthttp sees it), so
// the upstream request is aborted and its connection closed with the message
// unfinished (RFC 9112 section 8).
type reqBody struct {
	src      io.Reader
	ctx      *fasthttp.RequestCtx
	conn     *clientConn // the client connection, when kelpie's listener made it
	req      int         // the request's ConnRequestNum
	limit    int64       // 0 = none
	n        int64
	idle     time.Duration
	armed    time.Time
	touched  bool
	tooLarge bool
	err      error // a client-side read error (not a complete body's EOF); sticky
	ahead    []byte
	buf      [4 << 10]byte
}

var reqBodyPool = sync.Pool{New: func() any { return new(reqBody) }}

func (r *reqBody) Read(b []byte) (int, error) {
	r.touched = true
	if r.err != nil {
		// fasthttp's chunked stream reads on past a framing error (a bad
		// chunk end), and its chunked writer ignores an error that came
		// with data: without this the rest would go upstream as if the
		// body were well-formed.
		return 0, r.err
	}
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
	n, err := r.read(b)
	if r.limit > 0 && r.n > r.limit {
		r.tooLarge = true
		return 0, errBodyTooLarge
	}
	return n, err
}

// read is the one read of the client's body stream: it counts, turns an end
// of the body the client's stream did not reach whole into the stream's
// error, and records a client error in r.err.
func (r *reqBody) read(b []byte) (int, error) {
	n, err := r.src.Read(b)
	r.n += int64(n)
	if err == io.EOF && r.conn != nil {
		if cerr := r.conn.bodyErr(r.req); cerr != nil {
			err = cerr
		}
	}
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// failure is the answer to a request whose body broke off on the client's
// side, the one source of its status and message: 413 past MaxBodyBytes,
// 408 when the client stalled past the read timeout, 400 naming a bare LF, a
// stream that ended mid-body or a refused trailer field, 400 for any other
// malformed chunked body. The client connection's own error is asked first:
// fasthttp wraps some read errors in types that do not unwrap
// (ErrBrokenChunk).
func (r *reqBody) failure() (int, string) {
	cause, ended := r.err, false
	if r.conn != nil {
		if cerr := r.conn.bodyErr(r.req); cerr != nil {
			cause, ended = cerr, true
		}
	}
	switch {
	case r.tooLarge:
		return fasthttp.StatusRequestEntityTooLarge, "request body too large"
	case timedOut(cause):
		return fasthttp.StatusRequestTimeout, "request body timed out"
	case errors.Is(cause, errBareLF):
		return fasthttp.StatusBadRequest, "bare LF in chunked body"
	case ended, errors.Is(cause, io.ErrUnexpectedEOF):
		return fasthttp.StatusBadRequest, "request body incomplete"
	}
	if name, ok := forbiddenTrailer(cause); ok {
		return fasthttp.StatusBadRequest, "trailer field not allowed: " + name
	}
	return fasthttp.StatusBadRequest, "invalid chunked body"
}

// timedOut reports a deadline's expiry.
func timedOut(err error) bool {
	var t interface{ Timeout() bool }
	return errors.Is(err, fasthttp.ErrTimeout) || errors.As(err, &t) && t.Timeout()
}

// prepareBody puts a reqBody in front of a request's body stream. It refuses
// a Content-Length above MaxBodyBytes (413), and a chunked body whose first
// 4 KiB (or all of it, when shorter) is malformed, cut off or over the limit,
// before anything goes upstream. Later framing errors and truncations abort
// the upstream request mid-body: kelpie re-frames bodies, so the backend
// sees an unfinished request, never a smuggled or a falsely complete one.
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
	r.conn = clientConnOf(ctx.Conn())
	r.req = int(ctx.ConnRequestNum())
	r.armed = time.Now()
	if cl == -1 {
		n := 0
		var err error
		for n < len(r.buf) && err == nil {
			var m int
			m, err = r.read(r.buf[n:])
			n += m
		}
		r.tooLarge = r.limit > 0 && r.n > r.limit
		if r.err != nil || r.tooLarge {
			status, msg := r.failure()
			r.release()
			return nil, status, msg
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
	r.src, r.ctx, r.conn, r.ahead, r.err = nil, nil, nil, nil, nil
	r.n, r.req, r.touched, r.tooLarge = 0, 0, false, false
	reqBodyPool.Put(r)
}

// respBody streams an upstream response body to the client and finishes the
// attempt when fasthttp's server is done with it: a clean end with the
// attempt's outcome, a backend error mid-body as a reset (the server then
// closes the client connection, so a truncated body is detectable). A
// client that stops reading or leaves is not the backend's failure.
type respBody struct {
	p      *Proxy
	a      attempt
	o      outcome
	resp   *fasthttp.Response
	src    io.Reader
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

// streamBuf is how much of a streamed response body kelpie moves per read
// and write: 64 KiB, the most a loopback segment carries. fasthttp would copy
// through its 4 KiB write buffer instead (bufio.Writer.ReadFrom), one write
// system call per 4 KiB: twice HAProxy's CPU per GB downloaded.
const streamBuf = 64 << 10

var streamBufPool = sync.Pool{New: func() any { return new([streamBuf]byte) }}

// WriteTo copies the body to w, fasthttp's buffered writer on the client
// connection, in streamBuf pieces: fasthttp's copy takes it over its own
// (copyZeroAlloc prefers a reader's WriteTo), and once w's buffer is empty,
// bufio.Writer hands a piece that large straight to the connection.
func (r *respBody) WriteTo(w io.Writer) (int64, error) {
	buf := streamBufPool.Get().(*[streamBuf]byte)
	defer streamBufPool.Put(buf)
	var n int64
	for {
		m, err := r.Read(buf[:])
		if m > 0 {
			k, werr := w.Write(buf[:m])
			n += int64(k)
			if werr != nil {
				return n, werr
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// CloseWithError is called by fasthttp once the response is written or
// abandoned; werr is the client-side write error, if any.
func (r *respBody) CloseWithError(werr error) error {
	o := r.o
	if !r.eof && r.rerr != nil {
		o.result, o.err = balancer.ResultReset, r.rerr
	}
	if c, ok := r.src.(fasthttp.ReadCloserWithError); ok {
		_ = c.CloseWithError(werr)
	}
	r.p.finish(&r.a, o)
	r.stats.Latency.Observe(time.Since(r.start))
	fasthttp.ReleaseResponse(r.resp)
	*r = respBody{}
	respBodyPool.Put(r)
	return nil
}
