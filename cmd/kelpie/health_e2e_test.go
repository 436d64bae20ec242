package main

// End-to-end health and failover through the whole kelpie: real fasthttp
// backends on loopback, the proxy, health checker and admin API wired by
// newApp. A killed and a hung backend under load: fault_e2e_test.go.

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// healthFlipper answers /health with its current status (200 at first) and
// every other path with 200 and its name.
type healthFlipper struct {
	name   string
	status atomic.Int32
}

func newHealthFlipper(name string) *healthFlipper {
	h := &healthFlipper{name: name}
	h.status.Store(200)
	return h
}

func (h *healthFlipper) handle(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) == "/health" {
		ctx.SetStatusCode(int(h.status.Load()))
		return
	}
	ctx.WriteString(h.name)
}

// backendState returns the admin API's view of one backend.
func (ta *testApp) backendState(t testing.TB, addr string) (eligible, ejected bool, health string) {
	t.Helper()
	for _, u := range ta.Upstreams(t).Upstreams {
		for _, b := range u.Backends {
			if b.Address == addr {
				return b.Eligible, b.Ejected, b.Health
			}
		}
	}
	t.Fatalf("backend %s not in the admin API", addr)
	return
}

// waitEligible polls the admin API until addr's eligibility is want and
// returns how long that took.
func (ta *testApp) waitEligible(t testing.TB, addr string, want bool, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, within, fmt.Sprintf("%s eligible=%v", addr, want), func() bool {
		el, _, _ := ta.backendState(t, addr)
		return el == want
	})
	return time.Since(start)
}

// TestHealthProbeFlipE2E: a backend whose health check starts failing is
// ineligible within fall x interval plus one interval, and back within
// rise x interval plus one.
func TestHealthProbeFlipE2E(t *testing.T) {
	a, b := newHealthFlipper("a"), newHealthFlipper("b")
	ba, bb := startBackend(t, a.handle), startBackend(t, b.handle)
	const interval = 500 * time.Millisecond
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    health:
      active: {path: /health, interval: 500ms, timeout: 250ms, rise: 2, fall: 3}
`, yamlBackends(ba.Addr, bb.Addr)))
	eventually(t, 2*time.Second, "first probe", func() bool {
		_, _, h := ta.backendState(t, ba.Addr)
		return h == "healthy"
	})
	a.status.Store(503)
	if d := ta.waitEligible(t, ba.Addr, false, 5*time.Second); d > 3*interval+interval {
		t.Fatalf("ineligible after %s, want within fall x interval + interval = %s", d, 4*interval)
	}
	for range 20 {
		if code, body := ta.Get(t, "/x"); code != 200 || body != "b" {
			t.Fatalf("with a unhealthy: %d %q", code, body)
		}
	}
	a.status.Store(200)
	if d := ta.waitEligible(t, ba.Addr, true, 5*time.Second); d > 2*interval+interval {
		t.Fatalf("eligible again after %s, want within rise x interval + interval = %s", d, 3*interval)
	}
}

// TestHealthPassiveEjects502E2E: a backend answering 502 to all traffic
// while its health check passes is ejected after consecutive_failures, with
// no more client errors than that (retries off, so every 502 shows).
func TestHealthPassiveEjects502E2E(t *testing.T) {
	bad := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/health" {
			return // 200: probes pass
		}
		ctx.SetStatusCode(fasthttp.StatusBadGateway)
	})
	good := startBackend(t, named("good"))
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    retries: {attempts: 0}
    health:
      active: {path: /health, interval: 200ms, timeout: 150ms}
      passive: {consecutive_failures: 5, ejection: 30s}
`, yamlBackends(bad.Addr, good.Addr)))
	eventually(t, 2*time.Second, "first probes", func() bool {
		_, _, h := ta.backendState(t, bad.Addr)
		return h == "healthy"
	})
	errors := 0
	for range 200 {
		code, body := ta.Get(t, "/x")
		switch {
		case code == 502:
			errors++
		case code != 200 || body != "good":
			t.Fatalf("unexpected answer %d %q", code, body)
		}
	}
	if errors != 5 {
		t.Fatalf("%d client 502s, want exactly consecutive_failures = 5", errors)
	}
	el, ej, h := ta.backendState(t, bad.Addr)
	if el || !ej || h != "healthy" {
		t.Fatalf("502 backend: eligible=%v ejected=%v health=%s, want ejected while healthy", el, ej, h)
	}
	if !strings.Contains(ta.Logs.String(), "5 consecutive gateway errors") {
		t.Fatal("ejection not logged with its reason")
	}
}

// TestHealthBackupsFailbackE2E: backups get no request while a primary is
// eligible, all of them when every primary is down, and none again after
// failback.
func TestHealthBackupsFailbackE2E(t *testing.T) {
	p1, p2, bk := newHealthFlipper("p1"), newHealthFlipper("p2"), newHealthFlipper("backup")
	s1, s2, sb := startBackend(t, p1.handle), startBackend(t, p2.handle), startBackend(t, bk.handle)
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
      - {address: %q}
      - {address: %q}
      - {address: %q, backup: true}
    health:
      active: {path: /health, interval: 200ms, timeout: 150ms, rise: 1, fall: 2}
`, s1.Addr, s2.Addr, sb.Addr))
	for _, s := range []*backend{s1, s2, sb} {
		eventually(t, 3*time.Second, "first probes", func() bool {
			_, _, h := ta.backendState(t, s.Addr)
			return h == "healthy"
		})
	}
	count := func() map[string]int {
		got := map[string]int{}
		for range 60 {
			code, body := ta.Get(t, "/x")
			if code != 200 {
				t.Fatalf("GET: %d %q", code, body)
			}
			got[body]++
		}
		return got
	}
	if got := count(); got["backup"] != 0 || got["p1"] == 0 || got["p2"] == 0 {
		t.Fatalf("primaries healthy: %v, want 0 on the backup", got)
	}
	p1.status.Store(503)
	p2.status.Store(503)
	ta.waitEligible(t, s1.Addr, false, 3*time.Second)
	ta.waitEligible(t, s2.Addr, false, 3*time.Second)
	if got := count(); got["backup"] != 60 {
		t.Fatalf("every primary down: %v, want all 60 on the backup", got)
	}
	p2.status.Store(200)
	ta.waitEligible(t, s2.Addr, true, 3*time.Second)
	if got := count(); got["backup"] != 0 || got["p2"] != 60 {
		t.Fatalf("after failback: %v, want all 60 on p2", got)
	}
}
