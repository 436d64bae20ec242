package proxy

import (
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// Hedged requests (Finagle's backup requests, Envoy's hedge on per-try
// timeout): when an idempotent request's first attempt has not answered
// within Upstream.HedgeAfter, one more attempt goes to another backend and
// the first answer wins. A frozen or black-holed backend then costs a client
// the hedge delay, not the response or connect timeout.
//
// Each attempt sends its own copy of the request, so the client's request
// is never read by two goroutines and the handler may return while the
// loser still runs. fasthttp cannot abort a request in flight, so the loser
// is not cut off: it runs to its end (at most the response timeout) in the
// background, where its response is discarded and its attempt finished
// like any other, so its backend is still blamed for a timeout. Only
// requests whose body kelpie holds whole (none, or one read before
// forwarding) are hedged, never one whose body is streamed.

// sent is what one attempt's transport call came to.
type sent struct {
	a    attempt
	req  *fasthttp.Request
	resp *fasthttp.Response
	w    wire
	err  error
}

// launch runs a's request (a copy of ctx's) in a goroutine and reports to ch.
func launch(ctx *fasthttp.RequestCtx, a attempt, resp *fasthttp.Response, ch chan<- sent) {
	req := fasthttp.AcquireRequest()
	ctx.Request.CopyTo(req)
	go func() {
		start := time.Now()
		w, err := a.t.Do(req, resp)
		a.rtt = time.Since(start)
		ch <- sent{a: a, req: req, resp: resp, w: w, err: err}
	}()
}

// hedge runs a's attempt and, if it has not answered within up's hedge delay,
// a second one on another backend. It returns the outcome of the attempt
// whose answer is used, with that attempt (in *a) and its response, and
// the other backend tried, if any, for the caller's tried list.
func (p *Proxy) hedge(ctx *fasthttp.RequestCtx, up *Upstream, a *attempt, resp *fasthttp.Response, key uint64, tried []*balancer.Backend) (outcome, *fasthttp.Response, *balancer.Backend) {
	ch := make(chan sent, 2)
	launch(ctx, *a, resp, ch)
	timer := time.NewTimer(up.hedgeDelay(time.Now()))
	defer timer.Stop()
	var first sent
	select {
	case first = <-ch:
		return p.settle(ctx, a, first, nil), first.resp, nil
	case <-timer.C:
	}
	var second *balancer.Backend
	if b := up.Pool.Pick(key, append(tried, a.b)); b != nil {
		if a2, ok := p.begin(up, b); ok {
			up.Stats.Hedges.Add(1)
			second = b
			launch(ctx, a2, fasthttp.AcquireResponse(), ch)
		}
	}
	first = <-ch
	if second != nil && first.err != nil {
		// A failed attempt loses to one still running: wait for the other.
		other := <-ch
		go p.discard(first)
		first = other
	} else if second != nil {
		go func() { p.discard(<-ch) }()
	}
	other := second
	if first.a.b == second {
		other = a.b
	}
	return p.settle(ctx, a, first, nil), first.resp, other
}

// settle turns a finished transport call into the attempt's outcome, as
// send does, and makes its attempt *a.
func (p *Proxy) settle(ctx *fasthttp.RequestCtx, a *attempt, s sent, rb *reqBody) outcome {
	fasthttp.ReleaseRequest(s.req)
	*a = s.a
	return p.outcomeOf(ctx, s.resp, s.w, s.err, true, rb)
}

// discard ends a losing attempt: its response is dropped unread and the
// attempt finishes with what it came to.
func (p *Proxy) discard(s sent) {
	fasthttp.ReleaseRequest(s.req)
	var o outcome
	if s.err == nil {
		o = backendAnswer(s.resp.StatusCode())
	} else {
		o = classify(s.err, s.w, true, nil)
		if o.result == balancer.ResultLocal {
			o.status = 0
		}
	}
	_ = s.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(s.resp)
	p.finish(&s.a, o)
}
