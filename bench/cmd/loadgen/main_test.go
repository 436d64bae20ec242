package main

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// serve starts a loopback fasthttp server whose handler waits delay and
// answers status.
func serve(t *testing.T, delay time.Duration, status int) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		time.Sleep(delay)
		ctx.SetStatusCode(status)
		ctx.SetBodyString("ok")
	}}
	go srv.Serve(ln) //nolint:errcheck // ends when the listener closes
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String() + "/"
}

// A paired run gives every target the same schedule and keeps their
// results apart: equal counts, and each target's own errors and latency.
// The slow target also answers 503, so that which results went where is
// told by counts, not by latencies: latency is measured from the intended
// send time, so on a loaded machine the generator's own lag can put the
// fast target's median far above any handler delay.
func TestPairedTargetsShareTheScheduleNotTheResults(t *testing.T) {
	const delay = 5 * time.Millisecond
	fast, slow := serve(t, 0, fasthttp.StatusOK), serve(t, delay, fasthttp.StatusServiceUnavailable)
	var targets []*target
	for _, u := range []string{fast, slow} {
		tg, err := newTarget(u, 32, 2*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, tg)
	}
	r := run{interval: 2 * time.Millisecond, timeout: 2 * time.Second}
	r.do(100*time.Millisecond, 400*time.Millisecond, 32, targets)

	f, s := &targets[0].res, &targets[1].res
	// 400 ms at one request per 2 ms: 200 due in the window, give or take the
	// boundary request.
	if f.h.total < 199 || f.h.total > 201 {
		t.Errorf("fast target recorded %d requests, want 200", f.h.total)
	}
	if s.h.total != f.h.total {
		t.Errorf("targets recorded %d and %d requests; one schedule should give both the same", f.h.total, s.h.total)
	}
	for i, res := range []*result{f, s} {
		if res.late != 0 {
			t.Errorf("target %d: late=%d, want none", i, res.late)
		}
		if res.cpuPerReq != "-" {
			t.Errorf("target %d: cpu_us_req=%q without -pids, want -", i, res.cpuPerReq)
		}
	}
	if f.errors != 0 || s.errors != s.h.total {
		t.Errorf("errors: fast target %d (want 0), slow target %d (want all %d): results mixed up",
			f.errors, s.errors, s.h.total)
	}
	// Every slow request takes at least the handler's delay, however late
	// it was sent: a lower median can only be the fast target's results.
	if p50 := time.Duration(s.h.quantile(0.5)); p50 < delay {
		t.Errorf("slow target p50 %v, below its handler's %v: results mixed up?", p50, delay)
	}
	t.Logf("p50: fast target %v, slow target %v (handler %v)",
		time.Duration(f.h.quantile(0.5)), time.Duration(s.h.quantile(0.5)), delay)
}
