package main

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// Gray failures (issue 18): backends that are slow or answer errors without
// failing outright, and recovery after a crash. Real backends on loopback,
// real kelpie, a client that never retries.

// countingBackend answers like named(name), counting requests other than
// /health (served); it delays each of them by its delay (the backend
// application being slow) and answers 500 to those fail picks.
type countingBackend struct {
	*testkit.Backend
	served atomic.Int64
}

func startGray(t testing.TB, name string, delay time.Duration, fail func(n int64) bool) *countingBackend {
	cb := &countingBackend{}
	cb.Backend = testkit.StartBackend(t, cb.handler(name, delay, fail))
	return cb
}

// handler is the backend's behaviour, for startGray and for servers on
// other listeners (testkit.ServeOn).
func (cb *countingBackend) handler(name string, delay time.Duration, fail func(n int64) bool) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/health" {
			ctx.WriteString("ok")
			return
		}
		n := cb.served.Add(1)
		if delay > 0 {
			time.Sleep(delay) // the backend is slow: this is its behaviour, not a wait
		}
		if fail != nil && fail(n) {
			ctx.SetStatusCode(fasthttp.StatusInternalServerError)
		}
		ctx.WriteString(name)
	}
}

// down reports upstream web's reasons against addr.
func down(ta *testApp, addr string) balancer.Reason {
	b := ta.poolByName("web").Lookup(addr)
	if b == nil {
		return balancer.ReasonRemoved
	}
	return b.Down()
}

// TestGraySlowBackendLeastLatencyE2E: one of three backends answers 300 ms
// slower; with least_latency it gets under 10% of the requests (round robin
// gives it a third).
func TestGraySlowBackendLeastLatencyE2E(t *testing.T) {
	a, b := startGray(t, "a", 0, nil), startGray(t, "b", 0, nil)
	slow := startGray(t, "slow", 300*time.Millisecond, nil)
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    balance: least_latency
    backends:
%s    health:
      passive: {latency: {factor: 0}}
    retries: {attempts: 1}
    timeouts: {connect: 1s, response: 2s}
`, yamlBackends(a.Addr, b.Addr, slow.Addr)))
	run := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 250, Between: paced}).Wait()
	total := a.served.Load() + b.served.Load() + slow.served.Load()
	share := float64(slow.served.Load()) / float64(total)
	t.Logf("least_latency: %s; slow backend got %d of %d (%.1f%%)", run, slow.served.Load(), total, 100*share)
	if run.Failed() != 0 {
		t.Fatalf("client errors: %s", run)
	}
	if share >= 0.10 {
		t.Fatalf("slow backend's share %.1f%%, want under 10%%", 100*share)
	}
}

// TestGraySlowBackendEjectedE2E: under round robin the same slow backend is
// ejected by latency outlier detection (reason slow), and then gets no
// more traffic.
func TestGraySlowBackendEjectedE2E(t *testing.T) {
	a, b := startGray(t, "a", 0, nil), startGray(t, "b", 0, nil)
	slow := startGray(t, "slow", 300*time.Millisecond, nil)
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    health:
      passive: {latency: {factor: 3, min_requests: 5, interval: 1s}}
    retries: {attempts: 1}
    timeouts: {connect: 1s, response: 2s}
`, yamlBackends(a.Addr, b.Addr, slow.Addr)))
	load := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 20000, Between: paced})
	defer load.Stop()
	start := time.Now()
	eventually(t, 5*time.Second, "slow backend ejected", func() bool { return down(ta, slow.Addr) == balancer.ReasonSlow })
	detect := time.Since(start)
	before := slow.served.Load()
	pause(2 * time.Second) // traffic while it is out
	after := slow.served.Load()
	run := load.Stop()
	t.Logf("round robin: detected in %s; %s; slow backend served %d during the 2s after", detect.Round(time.Millisecond), run, after-before)
	if after-before > 8 { // at most the requests in flight on it when it was ejected
		t.Fatalf("ejected slow backend served %d requests after its ejection", after-before)
	}
	if !eligible(ta, a.Addr) || !eligible(ta, b.Addr) {
		t.Fatal("a fast backend left rotation")
	}
	if !logged(ta, "reason=slow") {
		t.Fatalf("no log line with reason=slow")
	}
	// The API shows the reason and each backend's latency; /metrics counts it.
	for _, u := range ta.Upstreams(t).Upstreams {
		for _, be := range u.Backends {
			switch {
			case be.Address == slow.Addr && (!be.Ejected || !slices.Equal(be.Down, []string{"slow"}) || be.LatencyMS < 100):
				t.Errorf("API on the slow backend: ejected=%v down=%v latency_ms=%v, want true [slow] >100", be.Ejected, be.Down, be.LatencyMS)
			case be.Address != slow.Addr && (be.LatencyMS <= 0 || be.LatencyMS > 100):
				t.Errorf("API on fast backend %s: latency_ms=%v, want a few ms at most", be.Address, be.LatencyMS)
			}
		}
	}
	if _, m := httpGet(t, ta.AdminURL+"/metrics"); !strings.Contains(m, `reason="slow"`) {
		t.Errorf("/metrics has no transition with reason=\"slow\"")
	}
}

// TestGrayErroringBackendEjectedE2E: a backend answering 500 to 30% of
// requests while its peers answer none is ejected (reason errors) by
// failure-percentage detection, and client errors stop.
func TestGrayErroringBackendEjectedE2E(t *testing.T) {
	a, b := startGray(t, "a", 0, nil), startGray(t, "b", 0, nil)
	bad := startGray(t, "bad", 0, func(n int64) bool { return n%10 < 3 })
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    health:
      passive: {failure_percentage: {threshold: 20, minimum_hosts: 3, request_volume: 30, interval: 1s}}
    retries: {attempts: 1}
    timeouts: {connect: 1s, response: 2s}
`, yamlBackends(a.Addr, b.Addr, bad.Addr)))
	load := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 20000, Between: paced})
	start := time.Now()
	eventually(t, 5*time.Second, "erroring backend ejected", func() bool { return down(ta, bad.Addr) == balancer.ReasonErrors })
	detect := time.Since(start)
	first := load.Stop()
	second := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 200, Between: paced}).Wait()
	t.Logf("detected in %s; before: %s; after: %s", detect.Round(time.Millisecond), first, second)
	if first.Failed() == 0 {
		t.Fatal("no client saw a 500 before the ejection: the backend did not fail")
	}
	if second.Failed() != 0 {
		t.Fatalf("client errors after the ejection: %s", second)
	}
	if !logged(ta, "reason=errors") {
		t.Fatalf("no log line with reason=errors")
	}
	for _, u := range ta.Upstreams(t).Upstreams {
		for _, be := range u.Backends {
			if be.Address == bad.Addr && (!slices.Equal(be.Down, []string{"errors"}) || be.SuccessRate > 0.95 || be.SuccessRate < 0.5) {
				t.Errorf("API on the erroring backend: down=%v success_rate=%v, want [errors] about 0.7", be.Down, be.SuccessRate)
			}
		}
	}
	if _, m := httpGet(t, ta.AdminURL+"/metrics"); !strings.Contains(m, `reason="errors"`) {
		t.Errorf("/metrics has no transition with reason=\"errors\"")
	}
}

// TestGrayRecoveryAfterCrashE2E: a backend crashes under load and comes
// back on the same port a second later, before the probes noticed: passive
// detection ejects it at once, and passing probes end the ejection within
// rise x interval + 1s of its return, not after the 30s ejection time.
func TestGrayRecoveryAfterCrashE2E(t *testing.T) {
	a, b := startGray(t, "a", 0, nil), startGray(t, "b", 0, nil)
	k := startGray(t, "k", 0, nil)
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    health:
      active: {interval: 1s, timeout: 900ms, rise: 2, fall: 3}
      passive: {consecutive_failures: 3}
    retries: {attempts: 1}
    timeouts: {connect: 1s, response: 2s}
`, yamlBackends(a.Addr, b.Addr, k.Addr)))
	load := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 20000, Between: paced})
	defer load.Stop()
	eventually(t, 10*time.Second, "traffic on k", func() bool {
		if k.served.Load() > 50 {
			return true
		}
		if load.Total() > 5000 {
			t.Fatalf("k got %d of %d requests; down=%s; load %s", k.served.Load(), load.Total(), down(ta, k.Addr), load)
		}
		return false
	})
	k.Kill()
	start := time.Now()
	eventually(t, 5*time.Second, "k ejected", func() bool { return down(ta, k.Addr)&balancer.ReasonEjected != 0 })
	detect := time.Since(start)
	pause(time.Second - time.Since(start)) // down for a second
	ln, err := net.Listen("tcp", k.Addr)
	if err != nil {
		t.Fatalf("restart on %s: %v", k.Addr, err)
	}
	back := time.Now()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.WriteString("k") }}
	go srv.Serve(ln)
	defer srv.Shutdown()
	eventually(t, 10*time.Second, "k back in rotation", func() bool { return eligible(ta, k.Addr) })
	ttr := time.Since(back)
	run := load.Stop()
	t.Logf("detected in %s, back %s after its restart; %s", detect.Round(time.Millisecond), ttr.Round(time.Millisecond), run)
	if limit := 2*time.Second + time.Second; ttr > limit {
		t.Fatalf("recovery took %s, want within rise x interval + 1s = %s", ttr, limit)
	}
	if run.Failed() != 0 {
		t.Fatalf("client errors: %s", run)
	}
}

// logged reports whether kelpie's log holds s.
func logged(ta *testApp, s string) bool { return strings.Contains(ta.Logs.String(), s) }

// TestGrayFrozenBackendHedgedE2E: one of three backends accepts and never
// answers (frozen). With hedging after 50ms, no client waits for the 2s
// response timeout: the p99 stays under the hedge delay + the normal tail
// (hedgeBound).
func TestGrayFrozenBackendHedgedE2E(t *testing.T) {
	a, b := startGray(t, "a", 0, nil), startGray(t, "b", 0, nil)
	frozen := testkit.StartRaw(t, testkit.Hung)
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    retries: {attempts: 1, hedge: {after: 50ms}}
    timeouts: {connect: 1s, response: 2s}
`, yamlBackends(a.Addr, b.Addr, frozen.Addr)))
	run := hedgedLoad(t, ta, 150, "frozen backend, hedge after 50ms", 50*time.Millisecond)
	if worst := run.Quantile(1); worst >= time.Second {
		t.Fatalf("slowest request took %s: it waited for the response timeout", worst)
	}
}
