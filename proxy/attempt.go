package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"syscall"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/metrics"
	"github.com/valyala/fasthttp"
)

// An attempt is one try of a request on one backend. begin admits it
// (Backend.Acquire, then the backend's guard); finish ends it, exactly once,
// wherever it ends: in forward when it fails or its response is small, or
// after the handler returned when its streamed response body is closed
// (respBody). finish is where blame lands: it reports the attempt's result to
// the guard (breaker, passive ejection) and to the backend's counters, and
// logs a failure. What the result is, and so who is to blame, is decided by
// classify from what reached the wire. These two functions are kelpie's only
// use of the guard and Release API.
type attempt struct {
	b       *balancer.Backend
	done    func(balancer.Result)
	t       transport
	stats   *metrics.UpstreamStats
	rtt     time.Duration // from sending to the response head or the failure (send sets it)
	penalty time.Duration // what an error costs in the backend's latency average
}

// begin admits an attempt on b. It reports false, counting nothing against
// b, when b was drained or removed since it was picked or its guard refused
// (an open breaker): the caller picks another backend.
func (p *Proxy) begin(up *Upstream, b *balancer.Backend) (attempt, bool) {
	return p.admit(up, b, b.Acquire())
}

// admit is begin after the Acquire (or AcquireDraining) that returned
// acquired.
func (p *Proxy) admit(up *Upstream, b *balancer.Backend, acquired bool) (attempt, bool) {
	if !acquired {
		return attempt{}, false
	}
	done, err := b.Admit()
	if err != nil {
		b.Release(balancer.ResultLocal)
		return attempt{}, false
	}
	return attempt{b: b, done: done, t: withFault(p.conns.get(up, b), up, b), stats: up.Stats, penalty: min(up.settings().response, maxErrorPenalty)}, true
}

// outcome is how an attempt ended: what it counts as for the backend, what
// the client gets if no other attempt follows, and whether one may.
type outcome struct {
	pass   bool // the backend's response, to be passed on to the client
	result balancer.Result
	status int    // the response status the attempt produced: the backend's, or kelpie's error status
	msg    string // kelpie's short error body, for a failure
	retry  bool   // another backend may be tried
	stale  bool   // a reused connection the backend had closed: retry the same backend on a fresh one
	noSlot bool   // the backend had no connection to spare: another backend is tried, free of the retry budget
	client bool   // the request's own fault: answer it, close the client connection, no retry
	sent   bool   // the request (or part of it) reached the backend: it may have run there
	err    error  // the failure, for the log
}

// backendAnswer is the outcome of an attempt the backend answered with status.
func backendAnswer(status int) outcome {
	if status == fasthttp.StatusBadGateway || status == fasthttp.StatusServiceUnavailable || status == fasthttp.StatusGatewayTimeout {
		return outcome{pass: true, result: balancer.ResultGatewayStatus, status: status}
	}
	return outcome{pass: true, result: balancer.ResultOK, status: status}
}

// finish ends the attempt with o. Only gateway errors (o.result) count
// against the backend; ResultLocal counts nothing either way, not even the
// status code.
func (p *Proxy) finish(a *attempt, o outcome) {
	a.done(o.result)
	a.b.Release(o.result)
	if o.result != balancer.ResultLocal {
		a.stats.CountCode(a.b, o.status)
		failed, rtt := o.result.GatewayError(), a.rtt
		if failed || o.status >= 500 {
			rtt = max(rtt, a.penalty)
		}
		a.b.Observe(rtt, o.status, failed)
		if !failed {
			a.stats.Answered.Observe(a.rtt)
		}
	}
	if o.err != nil && p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.LogAttrs(context.Background(), slog.LevelDebug, "attempt failed",
			slog.String("backend", a.b.Address()), slog.String("result", o.result.String()),
			slog.Int("status", o.status), slog.String("error", o.err.Error()))
	}
}

// maxErrorPenalty caps the latency an error (gateway error or 5xx) is
// charged in the backend's latency average (least_latency): the response
// timeout, at most this. Without a penalty a backend that fails fast would
// look fast and attract traffic; with the full timeout one 500 would keep a
// backend out for minutes.
const maxErrorPenalty = time.Second

// classify decides what a failed attempt counts as. The client's side comes
// first: when the request body broke off (the client closed, half-closed,
// reset or stalled mid-upload) or grew past the limit, the upstream request
// was aborted because of it, whatever error the backend side then showed,
// and nothing counts against the backend. A request that never reached the
// connection (fasthttp refusing it before writing a byte) is local too.
// Only what the backend did counts: a refused or timed-out connect, a
// timeout, a reset, a malformed response. A reused connection the backend had
// already closed is nobody's failure: it is retried on a fresh one.
func classify(err error, w wire, idem bool, rb *reqBody) outcome {
	touched := rb.wasTouched()
	var de *dialError
	switch {
	case rb != nil && (rb.tooLarge || rb.err != nil):
		status, msg := rb.failure()
		return outcome{result: balancer.ResultLocal, status: status, msg: msg, client: true, err: err}
	case errors.As(err, &de):
		return outcome{result: balancer.ResultConnectFailed, status: fasthttp.StatusBadGateway, msg: "cannot connect to backend", retry: true, err: err}
	case errors.Is(err, fasthttp.ErrNoFreeConns) || errors.Is(err, ErrConnectsPending):
		return outcome{result: balancer.ResultLocal, status: fasthttp.StatusServiceUnavailable, msg: "backend connection limit reached", retry: true, noSlot: true, err: err}
	case !w.sent:
		return outcome{result: balancer.ResultLocal, status: fasthttp.StatusBadRequest, msg: "request cannot be forwarded", client: true, err: err}
	case timedOut(err):
		return outcome{result: balancer.ResultTimeout, status: fasthttp.StatusGatewayTimeout, msg: "backend timed out", retry: idem && !touched, sent: true, err: err}
	case w.reused && !w.gotBytes && closedEarly(err) && idem && !touched:
		return outcome{result: balancer.ResultLocal, status: fasthttp.StatusBadGateway, msg: "backend closed the connection", retry: true, stale: true, err: err}
	}
	msg := "backend connection failed"
	if w.gotBytes {
		msg = "bad response from backend"
	}
	return outcome{result: balancer.ResultReset, status: fasthttp.StatusBadGateway, msg: msg, retry: idem && !touched, sent: true, err: err}
}

// closedEarly reports errors of a connection the peer closed or reset.
func closedEarly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF)
}
