package main

// Fault tests under load through the whole kelpie on loopback: a backend
// killed, hung, resetting mid-response, flapping, and closing keep-alive
// connections as kelpie reuses them. Every client-visible error is counted:
// the load clients never retry on their own.

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/balancer"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// eligible reports whether the balancer may pick addr in upstream web.
func eligible(ta *testApp, addr string) bool {
	s := ta.poolByName("web").Snapshot()
	for i, b := range s.Members {
		if b.Address() == addr {
			return s.Eligible(i)
		}
	}
	return false
}

// pause waits d: pacing of the load, not a synchronisation.
func pause(d time.Duration) { <-time.After(d) }

// paced leaves the CPU some room between requests, so that health probes
// of healthy backends do not time out on a busy 2-core machine.
func paced(w, i int) { pause(time.Millisecond) }

// TestFaultBackendKilledUnderLoad: one of three backends crashes (listener
// closed, open connections reset) under 8 concurrent GET clients. With
// retries.attempts 1 no client sees an error; with retries off the errors
// are bounded by the requests caught on it. Either way passive detection
// ejects it at once (the admin API says ejected, not merely unhealthy), and
// it gets no attempt after that.
func TestFaultBackendKilledUnderLoad(t *testing.T) {
	for _, retries := range []int{1, 0} {
		t.Run(fmt.Sprintf("retries=%d", retries), func(t *testing.T) {
			bs := []*backend{startBackend(t, named("a")), startBackend(t, named("b")), startBackend(t, named("c"))}
			ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    retries: {attempts: %d}
    timeouts: {connect: 1s, response: 2s}
    health:
      active: {path: /health, interval: 500ms, timeout: 400ms, rise: 2, fall: 2}
      passive: {consecutive_failures: 3, ejection: 30s}
`, yamlBackends(bs[0].Addr, bs[1].Addr, bs[2].Addr), retries))
			dead := bs[1]
			eventually(t, 3*time.Second, "first probes", func() bool { return ta.poolByName("web").Snapshot().EligibleCount() == 3 })
			run := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 300, Between: paced})
			eventually(t, 10*time.Second, "load running", func() bool { return dead.Hits() > 200 })
			b := ta.poolByName("web").Lookup(dead.Addr)
			killed := time.Now()
			dead.Kill()
			eventually(t, 5*time.Second, "killed backend ineligible", func() bool { return !eligible(ta, dead.Addr) })
			took := time.Since(killed)
			eventually(t, 5*time.Second, "attempts on it finished", func() bool { return b.InFlight() == 0 })
			attempts := b.Requests()
			run.Wait()
			t.Logf("killed after %d hits; ineligible %s after the kill; %s", dead.Hits(), took, run)
			// fall x interval + timeout, plus slack for the poll.
			if bound := 2*500*time.Millisecond + 400*time.Millisecond; took > bound {
				t.Errorf("killed backend ineligible after %s, want within %s", took, bound)
			}
			if n := b.Requests(); n != attempts {
				t.Errorf("%d attempts reached the killed backend after it was ejected", n-attempts)
			}
			if el, ej, _ := ta.backendState(t, dead.Addr); el || !ej {
				t.Errorf("killed backend: eligible=%v ejected=%v, want ejected by passive detection", el, ej)
			}
			if run.Total() != 8*300 {
				t.Fatalf("load sent %d requests, want %d", run.Total(), 8*300)
			}
			if retries > 0 && run.Failed() != 0 {
				t.Fatalf("with retries: %s", run)
			}
			// retries off: only requests on it at the kill and the connects
			// before ejection may fail; at most 0.5%% of the run.
			if n := run.Failed(); retries == 0 && n > run.Total()/200 {
				t.Fatalf("without retries %d errors, want at most %d: %s", n, run.Total()/200, run)
			}
			t.Logf("client errors: %d of %d (%s since kill)", run.Failed(), run.Total(), time.Since(killed).Round(time.Millisecond))
		})
	}
}

// TestFaultHungBackendUnderLoad: a backend that accepts and never answers
// (data and probes) costs no client more than timeouts.response plus one
// retry, no GET fails, it is ejected after consecutive_failures timeouts,
// connections to it stay capped, and the total number of attempts stays
// close to the number of requests.
func TestFaultHungBackendUnderLoad(t *testing.T) {
	// Connections open at once, counted when each arrives: those not yet
	// ended whose peer (kelpie) has not closed them in the kernel's view.
	// A handler sees kelpie's close only when it is scheduled, which under
	// load can be after kelpie has opened the next connection.
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	maxOpen := 0
	hung := testkit.StartRaw(t, func(s *testkit.RawServer, c net.Conn, br *bufio.Reader) {
		mu.Lock()
		n := 1
		for o := range open {
			if !peerClosed(o) {
				n++
			}
		}
		open[c] = true
		maxOpen = max(maxOpen, n)
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(open, c)
			mu.Unlock()
		}()
		testkit.Hung(s, c, br) // until kelpie gives up and closes
	}).Addr
	maxOpenNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		return maxOpen
	}
	good1, good2 := startBackend(t, named("g1")), startBackend(t, named("g2"))
	const response = 300 * time.Millisecond
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    retries: {attempts: 1}
    timeouts: {connect: 1s, response: 300ms}
    max_conns_per_backend: 4
    health:
      active: {path: /health, interval: 500ms, timeout: 400ms, rise: 2, fall: 2}
      passive: {consecutive_failures: 3, ejection: 30s}
`, yamlBackends(hung, good1.Addr, good2.Addr)))
	run := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 250, Between: paced}).Wait()
	t.Logf("%s; at most %d connections open to the hung backend", run, maxOpenNow())
	if run.Failed() != 0 {
		t.Fatalf("GETs failed: %s", run)
	}
	if worst := run.Quantile(1); worst > response+250*time.Millisecond {
		t.Fatalf("slowest GET %s, want at most timeouts.response (%s) plus one quick retry", worst, response)
	}
	pool := ta.poolByName("web")
	var attempts uint64
	for _, b := range pool.Snapshot().Members {
		attempts += b.Requests()
	}
	if ratio := float64(attempts) / float64(run.Total()); ratio > 1.2 {
		t.Errorf("attempts/requests = %.3f, want <= 1.2", ratio)
	}
	// max_conns_per_backend plus the probe's own connection.
	if m := maxOpenNow(); m > 4+1 {
		t.Errorf("%d connections open at once to the hung backend, want <= 4 (+1 probe)", m)
	}
	if el, ej, _ := ta.backendState(t, hung); el || !ej {
		t.Fatalf("hung backend: eligible=%v ejected=%v, want ejected", el, ej)
	}
	t.Logf("attempts/requests = %d/%d, hung backend attempts %d", attempts, run.Total(), pool.Lookup(hung).Requests())
}

// TestFaultResetMidResponseNotRetried: a backend that sends the head and part
// of the body, then resets. The request is not retried (the backend saw one
// attempt per client error), the client sees an error rather than a short
// 200, the client connection is closed, each reset counts one failure, and
// the other backend keeps answering.
func TestFaultResetMidResponseNotRetried(t *testing.T) {
	const cl, sent = 100000, 5000
	var heads atomic.Int64
	partial := testkit.StartRaw(t, func(_ *testkit.RawServer, c net.Conn, br *bufio.Reader) {
		var req fasthttp.Request
		if req.Header.Read(br) != nil {
			return
		}
		heads.Add(1)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", cl, strings.Repeat("x", sent))
		testkit.ResetConn(c)
	}).Addr
	good := startBackend(t, named("good"))
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    retries: {attempts: 1}
    health:
      passive: {consecutive_failures: 0}
      breaker: {enabled: false}
`, yamlBackends(partial, good.Addr)))
	run := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 100,
		Want: func(code int, b []byte) bool { return code == 200 && string(b) == "good" }}).Wait()
	pool := ta.poolByName("web")
	eventually(t, 5*time.Second, "attempts finished", func() bool { return pool.Lookup(partial).InFlight() == 0 })
	t.Logf("%s; partial backend heads %d, good backend hits %d", run, heads.Load(), good.Hits())
	if heads.Load() == 0 || run.OK() == 0 {
		t.Fatalf("load missed a backend: %s", run)
	}
	if h := heads.Load(); h != run.Failed() {
		t.Errorf("partial backend saw %d requests but clients saw %d errors: a reset was retried or hidden", h, run.Failed())
	}
	if g := int64(good.Hits()); g != run.OK() {
		t.Errorf("good backend answered %d, clients got %d OK: a started response was retried", g, run.OK())
	}
	if f := pool.Lookup(partial).Failures(); f != uint64(heads.Load()) {
		t.Errorf("partial backend failures = %d, want one per reset (%d)", f, heads.Load())
	}
	// On a raw keep-alive connection: a 200 head, fewer body bytes than
	// Content-Length, then kelpie closes the connection (EOF, not our
	// deadline).
	for range 10 {
		c, err := net.Dial("tcp", ta.ProxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /raw HTTP/1.1\r\nHost: a\r\n\r\n")
		var resp fasthttp.ResponseHeader
		br := bufio.NewReader(c)
		if err := resp.Read(br); err != nil {
			t.Fatalf("raw: response head: %v", err)
		}
		n, err := io.ReadFull(br, make([]byte, resp.ContentLength()))
		c.Close()
		if err == nil && resp.ContentLength() == len("good") {
			continue // round robin gave the good backend; try again
		}
		if resp.StatusCode() != 200 || resp.ContentLength() != cl || n >= cl || err != io.ErrUnexpectedEOF {
			t.Fatalf("raw: %d, Content-Length %d, %d body bytes, read error %v; want 200, %d, fewer bytes, then EOF",
				resp.StatusCode(), resp.ContentLength(), n, err, cl)
		}
		return
	}
	t.Fatal("raw client never reached the partial backend")
}

// TestFaultFlappingBackend: a backend whose health endpoint alternates
// pass/fail on every probe, and whose data answers 503 while its last probe
// failed. rise 2 / fall 2 keep it from going unhealthy at all; GETs that meet
// its 503s are retried elsewhere, so no client sees an error.
func TestFaultFlappingBackend(t *testing.T) {
	var probes atomic.Int64
	var down atomic.Bool
	flap := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/health" {
			fail := probes.Add(1)%2 == 0 // the first probe passes
			down.Store(fail)
			if fail {
				ctx.SetStatusCode(503)
			}
			return
		}
		if down.Load() {
			ctx.SetStatusCode(503)
			return
		}
		ctx.WriteString("flap")
	})
	g1, g2 := startBackend(t, named("g1")), startBackend(t, named("g2"))
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    retries: {attempts: 1}
    health:
      active: {path: /health, interval: 300ms, timeout: 300ms, rise: 2, fall: 2}
      passive: {consecutive_failures: 3, ejection: 300ms}
`, yamlBackends(flap.Addr, g1.Addr, g2.Addr)))
	eventually(t, 5*time.Second, "first probes", func() bool {
		for _, b := range ta.poolByName("web").Snapshot().Members {
			if b.State().Health != balancer.HealthHealthy {
				return false
			}
		}
		return true
	})
	run := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 4, Requests: 1 << 20, Between: func(int, int) { pause(3 * time.Millisecond) }})
	eventually(t, 15*time.Second, "16 probes", func() bool { return probes.Load() >= 16 })
	run.Stop()
	b := ta.poolByName("web").Lookup(flap.Addr)
	var unhealthy, ejected uint64
	b.Transitions(func(r balancer.Reason, on bool, n uint64) {
		switch {
		case on && r == balancer.ReasonUnhealthy:
			unhealthy = n
		case on && r == balancer.ReasonEjected:
			ejected = n
		}
	})
	t.Logf("%s; %d probes, flapping backend: %d unhealthy transitions, %d ejections, %d attempts (%d failed)",
		run, probes.Load(), unhealthy, ejected, b.Requests(), b.Failures())
	if run.Failed() != 0 {
		t.Fatalf("GETs failed: %s", run)
	}
	if unhealthy != 0 {
		t.Errorf("alternating probes marked it unhealthy %d times, want 0 with rise 2 / fall 2", unhealthy)
	}
	if b.Requests() == 0 {
		t.Error("flapping backend got no traffic: the test tested nothing")
	}
}

// TestFaultStaleKeepAliveRace: backends that close kept-alive connections
// (after a 50ms idle time, or silently after every 3 requests) while kelpie
// reuses them. Bursts separated by pauses around the idle time hit the race;
// no idempotent request fails, and the backend is never blamed.
func TestFaultStaleKeepAliveRace(t *testing.T) {
	idleClose := func(t *testing.T) string {
		return testkit.StartServer(t, &fasthttp.Server{Handler: named("ok"), IdleTimeout: 50 * time.Millisecond}).Addr
	}
	closeAfter3 := func(t *testing.T) string {
		return testkit.StartRaw(t, func(_ *testkit.RawServer, c net.Conn, br *bufio.Reader) {
			var req fasthttp.Request
			for range 3 {
				if req.Read(br) != nil {
					return
				}
				body := "ok"
				if req.Header.IsHead() {
					body = ""
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n%s", body)
			}
		}).Addr
	}
	for _, tc := range []struct {
		name  string
		start func(*testing.T) string
	}{{"idle-50ms", idleClose}, {"close-after-3", closeAfter3}} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.start(t)
			ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    retries: {attempts: 1}
    timeouts: {idle: 10s}
`, yamlBackends(addr)))
			rng := rand.New(rand.NewPCG(1, 2))
			var rmu sync.Mutex
			run := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 400,
				Method: func(w, i int) string { return []string{"GET", "HEAD", "DELETE"}[i%3] },
				Want:   func(code int, b []byte) bool { return code == 200 },
				Between: func(w, i int) {
					if i%16 == 15 { // bursts of 16, then 40-60ms around the idle timeout
						rmu.Lock()
						d := 40*time.Millisecond + time.Duration(rng.IntN(20))*time.Millisecond
						rmu.Unlock()
						pause(d)
					}
				}}).Wait()
			pool := ta.poolByName("web")
			b := pool.Lookup(addr)
			t.Logf("%s; stale retries %d, backend failures %d", run, ta.metrics.Upstream(pool).Retries.Load(), b.Failures())
			if run.Failed() != 0 {
				t.Fatalf("idempotent requests failed: %s", run)
			}
			if ta.metrics.Upstream(pool).Retries.Load() == 0 {
				t.Fatal("no stale connection was met: the test tested nothing")
			}
			if b.Failures() != 0 || b.Down() != 0 {
				t.Fatalf("stale connections blamed the backend: failures %d, down %s", b.Failures(), b.Down())
			}
		})
	}
}
