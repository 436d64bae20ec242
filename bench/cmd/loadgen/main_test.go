package main

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// serve starts a loopback fasthttp server whose handler waits delay.
func serve(t *testing.T, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		time.Sleep(delay)
		ctx.SetBodyString("ok")
	}}
	go srv.Serve(ln) //nolint:errcheck // ends when the listener closes
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String() + "/"
}

// A paired run gives every target the same schedule and keeps their
// results apart: equal counts, and each target's own latency.
func TestPairedTargetsShareTheScheduleNotTheResults(t *testing.T) {
	const delay = 5 * time.Millisecond
	fast, slow := serve(t, 0), serve(t, delay)
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
		if res.errors != 0 || res.late != 0 {
			t.Errorf("target %d: errors=%d late=%d, want none", i, res.errors, res.late)
		}
		if res.cpuPerReq != "-" {
			t.Errorf("target %d: cpu_us_req=%q without -pids, want -", i, res.cpuPerReq)
		}
	}
	if p50 := time.Duration(s.h.quantile(0.5)); p50 < delay {
		t.Errorf("slow target p50 %v, below its handler's %v: results mixed up?", p50, delay)
	}
	if p50 := time.Duration(f.h.quantile(0.5)); p50 >= delay {
		t.Errorf("fast target p50 %v, at or above the slow handler's %v: results mixed up?", p50, delay)
	}
}
