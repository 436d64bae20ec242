package proxy

import (
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/metrics"
	"github.com/valyala/fasthttp"
)

// TestInjectedFaults: a drill's fault acts at kelpie's edge for its one
// backend: refused and black-holed connects and injected statuses never
// reach it and count as that backend's gateway errors, a delay reaches it
// late; the client sees what a real failure would give it (retries off), and
// the client-visible error counter counts it. Clearing the fault restores
// traffic.
func TestInjectedFaults(t *testing.T) {
	for _, tc := range []struct {
		fault    string
		status   int
		reaches  bool
		failures uint64
		minTime  time.Duration
	}{
		{"refuse", 502, false, 1, 0},
		{"blackhole", 502, false, 1, 200 * time.Millisecond},
		{"status=503", 503, false, 1, 0},
		{"status=418", 418, false, 0, 0},
		{"delay=150ms", 200, true, 0, 150 * time.Millisecond},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			be := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
			up := &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr), Stats: &metrics.UpstreamStats{}, ConnectTimeout: 200 * time.Millisecond}
			tp := proxyTo(t, up, Options{})
			b := up.Pool.Snapshot().Members[0]
			f, err := balancer.ParseFault(tc.fault)
			if err != nil {
				t.Fatal(err)
			}
			b.SetFault(&f)
			c := clientFor(tp.addr)
			start := time.Now()
			resp := do(t, c, "GET", "web", "/x")
			took := time.Since(start)
			if resp.StatusCode() != tc.status || took < tc.minTime {
				t.Fatalf("status %d after %s, want %d after at least %s", resp.StatusCode(), took, tc.status, tc.minTime)
			}
			if got := be.reqs.Load() > 0; got != tc.reaches {
				t.Fatalf("backend reached: %v, want %v", got, tc.reaches)
			}
			if b.Failures() != tc.failures {
				t.Fatalf("backend failures %d, want %d", b.Failures(), tc.failures)
			}
			wantFailed := uint64(0)
			if tc.status >= 502 && tc.status <= 504 {
				wantFailed = 1
			}
			if n := up.Stats.Failed.Load(); n != wantFailed {
				t.Fatalf("client-visible errors counted: %d, want %d", n, wantFailed)
			}
			b.SetFault(nil)
			if resp := do(t, c, "GET", "web", "/x"); resp.StatusCode() != 200 || string(resp.Body()) != "ok" {
				t.Fatalf("after the fault: %d %q", resp.StatusCode(), resp.Body())
			}
		})
	}
}

// TestInjectedFaultRetried: a refused connect injected on one backend is
// retried on the other: the client sees no error.
func TestInjectedFaultRetried(t *testing.T) {
	one := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("one") })
	two := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("two") })
	up := &Upstream{Pool: newPool(t, balancer.RoundRobin, one.addr, two.addr), Stats: &metrics.UpstreamStats{}, Retries: 1}
	tp := proxyTo(t, up, Options{})
	f := balancer.Fault{Kind: balancer.FaultRefuse}
	up.Pool.Lookup(one.addr).SetFault(&f)
	c := clientFor(tp.addr)
	for range 10 {
		if resp := do(t, c, "GET", "web", "/x"); resp.StatusCode() != 200 || string(resp.Body()) != "two" {
			t.Fatalf("%d %q, want 200 two", resp.StatusCode(), resp.Body())
		}
	}
	if one.reqs.Load() != 0 || up.Stats.Failed.Load() != 0 || up.Stats.Retries.Load() == 0 {
		t.Fatalf("faulted backend got %d requests; failed %d; retries %d", one.reqs.Load(), up.Stats.Failed.Load(), up.Stats.Retries.Load())
	}
}
