//go:build !race

package bench

import (
	"bufio"
	"strings"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/metrics"
	"github.com/valyala/fasthttp"
)

// TestHeaderPathAllocs guards kelpie's per-request header path (validation,
// routing, rewrite) at zero allocations once buffers are warm.
func TestHeaderPathAllocs(t *testing.T) {
	p := newHeaderProxy(t)
	var req fasthttp.Request
	br := bufio.NewReader(strings.NewReader(rawRequest))
	sr := strings.NewReader(rawRequest)
	run := func() {
		req.Reset()
		req.Header.DisableNormalizing() // as kelpie's server parses: names as sent
		sr.Reset(rawRequest)
		br.Reset(sr)
		if err := req.Header.Read(br); err != nil {
			t.Fatal(err)
		}
		if p.Match(req.Header.Host(), req.Header.RequestURI()) == nil {
			t.Fatal("no route")
		}
		if st := p.PrepareRequest(&req, peer, false); st != 0 {
			t.Fatalf("status %d", st)
		}
	}
	run()
	if n := testing.AllocsPerRun(200, run); n != 0 {
		t.Errorf("header path allocates %v times per request, want 0", n)
	}
}

// TestRouteAllocs guards route lookup at zero allocations.
func TestRouteAllocs(t *testing.T) {
	p := newHeaderProxy(t)
	host, uri := []byte("App.Example.com:443"), []byte("/api/v1/items?id=42")
	if n := testing.AllocsPerRun(200, func() { p.Match(host, uri) }); n != 0 {
		t.Errorf("route lookup allocates %v times, want 0", n)
	}
}

// TestAttemptAllocs guards the balancer's part of every attempt in the
// default configuration: Pick, Acquire, Admit through the real health guard
// with the circuit breaker on, done, Release and the status code count, for
// successes and the
// occasional gateway error (below both the breaker's and the passive
// detector's thresholds), at zero allocations.
func TestAttemptAllocs(t *testing.T) {
	pool := balancer.NewPool(balancer.Options{Name: "bench", NewGuard: defaultChecker().NewGuard})
	defer pool.Close()
	stats := metrics.New(nil).Upstream(pool)
	pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "a:80"}, {Address: "b:80"}, {Address: "c:80"}})
	for _, b := range pool.Snapshot().Members {
		if b.Guard() == nil {
			t.Fatalf("%s has no guard: the test would not see the breaker", b.Address())
		}
	}
	i := 0
	attempt := func() {
		b := pool.Pick(0, nil)
		if b == nil || !b.Acquire() {
			t.Fatal("no backend")
		}
		done, err := b.Admit()
		if err != nil {
			t.Fatalf("admit %s: %v", b.Address(), err)
		}
		res, status := balancer.ResultOK, 200
		if i++; i%4 == 0 {
			res, status = balancer.ResultGatewayStatus, 503
		}
		done(res)
		b.Release(res)
		stats.CountCode(b, status)
	}
	attempt()
	if n := testing.AllocsPerRun(1000, attempt); n != 0 {
		t.Errorf("pick and attempt with the breaker on allocate %v times, want 0", n)
	}
	for _, b := range pool.Snapshot().Members {
		if b.Down() != 0 {
			t.Fatalf("%s left rotation (%s): the results tripped a guard, so the run was not the steady state", b.Address(), b.Down())
		}
	}
}

// TestProxiedRequestAllocs bounds allocations of a whole proxied request
// (client, kelpie, backend, all in this process) in steady state. The 4 that
// remain are fasthttp's own per-response stream wrapper (clientStreamBody and
// its three closures, client.go RoundTrip), the price of streaming response
// bodies; kelpie's part allocates nothing, the default configuration's
// circuit breaker and passive detector included (newInmemProxy wires them).
func TestProxiedRequestAllocs(t *testing.T) {
	x := newInmemProxy(t)
	defer x.stop()
	req, resp := benchRequest(), fasthttp.AcquireResponse()
	for range 10 {
		x.roundTrip(t, req, resp)
	}
	n := testing.AllocsPerRun(200, func() { x.roundTrip(t, req, resp) })
	t.Logf("%.1f allocations per proxied request (all goroutines)", n)
	if n > 4 {
		t.Errorf("a proxied request allocates %v times, want at most 4", n)
	}
}
