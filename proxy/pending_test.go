package proxy

import (
	"bufio"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestPendingConnectsCapped: a backend whose connections all hang, one that
// accepts and never answers and one whose SYNs are dropped, gets at most
// MaxPendingConnects connects however many requests wait, not one per
// request. The requests that find no slot go to the good backend at once,
// free of the retry budget (retries: 0 here), and count nothing against the
// stuck one: every client gets its 200.
func TestPendingConnectsCapped(t *testing.T) {
	const (
		capN     = 4
		requests = 40
	)
	for _, tc := range []struct {
		name  string
		stuck func(t *testing.T) (addr string, accepted func() int64)
	}{
		{"accepts, never answers", func(t *testing.T) (string, func() int64) {
			s := testkit.StartRaw(t, testkit.Hung)
			return s.Addr, s.Conns.Load
		}},
		{"SYNs black-holed", func(t *testing.T) (string, func() int64) {
			return blackHole(t), func() int64 { return 0 }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stuck, accepted := tc.stuck(t)
			good := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("good") })
			var dials atomic.Int64 // connects kelpie started to the stuck backend
			dial := func(addr string, timeout time.Duration) (net.Conn, error) {
				if addr == stuck {
					dials.Add(1)
				}
				return net.DialTimeout("tcp", addr, timeout)
			}
			pool := newPool(t, balancer.RoundRobin, stuck, good.addr)
			up := &Upstream{Pool: pool, MaxPendingConnects: capN, Retries: 0, Dial: dial,
				ConnectTimeout: 2 * time.Second, ResponseTimeout: 2 * time.Second}
			px := proxyTo(t, up, Options{})
			c := clientFor(px.addr)
			c.MaxConns = 2 * (requests + 2*capN)
			// Hold capN connects on the stuck backend (round robin sends it
			// every other request): the requests that made them wait for
			// their timeouts in the background.
			var wg sync.WaitGroup
			for range 2 * capN {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var resp fasthttp.Response
					var req fasthttp.Request
					req.SetRequestURI("http://a/held")
					_ = c.Do(&req, &resp)
				}()
			}
			testkit.Eventually(t, 5*time.Second, "stuck backend's slots taken", func() bool { return dials.Load() >= capN })
			before := pool.Lookup(stuck).Failures()
			// capN workers (so the good backend never has more than capN
			// connects of its own pending), one request after another.
			var ok, failed atomic.Int64
			for range capN {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range requests / capN {
						var resp fasthttp.Response
						var req fasthttp.Request
						req.SetRequestURI("http://a/")
						err := c.DoTimeout(&req, &resp, time.Second)
						if err == nil && resp.StatusCode() == 200 && string(resp.Body()) == "good" {
							ok.Add(1)
						} else if failed.Add(1) == 1 {
							t.Logf("first failure: %v %d %q", err, resp.StatusCode(), resp.Body())
						}
					}
				}()
			}
			// Only the held requests may still wait; the others are done
			// within their 1s client timeout.
			testkit.Eventually(t, 15*time.Second, "requests answered", func() bool { return ok.Load()+failed.Load() == requests })
			if failed.Load() != 0 {
				t.Fatalf("%d of %d requests failed, want all answered by the good backend", failed.Load(), requests)
			}
			if d := dials.Load(); d > capN {
				t.Fatalf("%d connects to the stuck backend, want at most MaxPendingConnects = %d", d, capN)
			}
			if a := accepted(); a > capN {
				t.Fatalf("stuck backend accepted %d connections, want at most %d", a, capN)
			}
			if f := pool.Lookup(stuck).Failures(); f != before {
				t.Fatalf("stuck backend's failures went from %d to %d: skipping it must not count against it", before, f)
			}
			t.Logf("%d connects to the stuck backend for %d held and %d further requests", dials.Load(), 2*capN, requests)
			wg.Wait()
		})
	}
}

// TestPendingSlotFreedByFirstByte: a connection stops counting against
// MaxPendingConnects at its first response byte, so a healthy backend can
// hold more long-lived connections (here slow downloads) than the cap.
func TestPendingSlotFreedByFirstByte(t *testing.T) {
	const capN, downloads = 2, 6
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // also when the test fails early
	var started atomic.Int64
	good := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		started.Add(1)
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			w.WriteString("first;")
			w.Flush()
			<-release
			w.WriteString("rest")
		})
	})
	up := &Upstream{Pool: newPool(t, balancer.RoundRobin, good.addr), MaxPendingConnects: capN}
	px := proxyTo(t, up, Options{})
	c := clientFor(px.addr)
	c.MaxConns = 2 * downloads
	var wg sync.WaitGroup
	bodies := make([]string, downloads)
	for i := range downloads {
		// One at a time: each connect starts once the previous download's
		// head has arrived, so at most one is unproven at a time.
		testkit.Eventually(t, 5*time.Second, "previous download started", func() bool { return started.Load() == int64(i) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			var req fasthttp.Request
			var resp fasthttp.Response
			req.SetRequestURI("http://a/download")
			if err := c.DoTimeout(&req, &resp, 5*time.Second); err != nil {
				bodies[i] = err.Error()
				return
			}
			bodies[i] = strconv.Itoa(resp.StatusCode()) + " " + string(resp.Body())
		}()
	}
	testkit.Eventually(t, 5*time.Second, "all downloads started", func() bool { return started.Load() == downloads })
	free()
	wg.Wait()
	for i, b := range bodies {
		if b != "200 first;rest" {
			t.Errorf("download %d: %q, want 200 first;rest", i, b)
		}
	}
}
