package main

// Resource hygiene through the whole kelpie: goroutines and descriptors
// return to baseline after load, and slowloris connections neither slow real
// clients nor outlive limits.read_timeout. (Descriptor leaks across reloads:
// TestReloadsLeakNothing in lifecycle_e2e_test.go.)

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// liveGoroutines counts goroutines other than fasthttp's idle pooled
// workers, which a server keeps up to 10s for reuse after its connections
// end (they hold no connection and no memory worth counting).
func liveGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		lines := bytes.SplitN(g, []byte("\n"), 3)
		if len(lines) < 2 || bytes.Contains(lines[1], []byte("fasthttp.(*workerPool).workerFunc")) {
			continue
		}
		n++
	}
	return n
}

func goroutineDump() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// hygieneTraffic is a mixed run: 8 clients sending small GETs, 256 KiB
// downloads and 16 KiB uploads, while 20 raw clients each start a download
// and hang up after its first KiB.
func hygieneTraffic(t *testing.T, addr string, perWorker int) *testkit.Load {
	upload := strings.Repeat("u", 16<<10)
	run := testkit.StartLoad(addr, testkit.LoadOptions{Workers: 8, Requests: perWorker,
		Path: func(w, i int) string { return []string{"/small", "/big", "/upload"}[i%3] },
		Method: func(w, i int) string {
			if i%3 == 2 {
				return "POST"
			}
			return "GET"
		},
		Want: func(code int, b []byte) bool {
			return code == 200 && (len(b) == 5 || len(b) == 256<<10 || len(b) == len(upload))
		},
		Body: func(w, i int) string {
			if i%3 == 2 {
				return upload
			}
			return ""
		},
	})
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
			io.ReadFull(c, make([]byte, 1024))
		}()
	}
	wg.Wait()
	return run.Wait()
}

func hygieneBackend(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/big":
		ctx.Write(bytes.Repeat([]byte("b"), 256<<10))
	case "/upload":
		ctx.Write(ctx.PostBody())
	default:
		ctx.WriteString("small")
	}
}

// TestHygieneLoadReturnsToBaseline: after a mixed load with downloads,
// uploads and clients hanging up mid-response, goroutines and open
// descriptors come back to where they were once idle connections have
// timed out (timeouts.idle 300ms, limits.idle_timeout 1s).
func TestHygieneLoadReturnsToBaseline(t *testing.T) {
	bs := []*backend{startBackend(t, hygieneBackend), startBackend(t, hygieneBackend), startBackend(t, hygieneBackend)}
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    timeouts: {idle: 300ms}
limits: {idle_timeout: 1s}
`, yamlBackends(bs[0].Addr, bs[1].Addr, bs[2].Addr)))
	fd0 := openFDs(t)
	// Warm up with the same shape, so that pools sized by concurrency exist
	// before the baseline is taken.
	if r := hygieneTraffic(t, ta.ProxyAddr, 30); r.Failed() != 0 {
		t.Fatalf("warm-up: %s", r)
	}
	eventually(t, 5*time.Second, "warm-up connections closed", func() bool { return openFDs(t) <= fd0 })
	runtime.GC()
	g0 := liveGoroutines()

	run := hygieneTraffic(t, ta.ProxyAddr, 300)
	if run.Failed() != 0 {
		t.Fatalf("load: %s", run)
	}
	peakFD := openFDs(t)
	var g, fd int
	deadline := time.Now().Add(5 * time.Second)
	eventually(t, 6*time.Second, "goroutines and descriptors back to baseline", func() bool {
		g, fd = liveGoroutines(), openFDs(t)
		if time.Now().After(deadline) {
			t.Logf("goroutines %d (baseline %d), fds %d (baseline %d)\n%s", g, g0, fd, fd0, goroutineDump())
		}
		return g <= g0+2 && fd <= fd0
	})
	t.Logf("%s; goroutines %d -> %d, descriptors %d -> peak %d -> %d", run, g0, g, fd0, peakFD, fd)
}

// TestHygieneSlowloris: 300 connections that send a request head one byte
// per second do not slow a real client (median at most 3x the same
// client's without them, and no request near read_timeout), never reach
// the backend, and each is cut with 408 at limits.read_timeout after it
// connected (not before; within 1.5 x read_timeout on a loaded machine).
func TestHygieneSlowloris(t *testing.T) {
	be := startBackend(t, named("ok"))
	const readTimeout = 3 * time.Second
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%slimits: {read_timeout: 3s, idle_timeout: 10s}
`, yamlBackends(be.Addr)))
	measure := func() *testkit.Load {
		r := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 1, Requests: 300}).Wait()
		if r.Failed() != 0 {
			t.Fatalf("real client: %s", r)
		}
		return r
	}
	before := measure()

	const n = 300
	type cut struct {
		after time.Duration
		got   string
	}
	cuts := make(chan cut, n)
	started := make(chan struct{}, n)
	stop := make(chan struct{})
	defer close(stop)
	for range n {
		go func() {
			t0 := time.Now() // before kelpie can start any clock for it
			c, err := net.Dial("tcp", ta.ProxyAddr)
			if err != nil {
				started <- struct{}{}
				cuts <- cut{got: err.Error()}
				return
			}
			defer c.Close()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
			started <- struct{}{}
			go func() { // one more header byte every second
				tick := time.NewTicker(time.Second)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := c.Write([]byte("x")); err != nil {
							return
						}
					}
				}
			}()
			c.SetReadDeadline(time.Now().Add(readTimeout + 5*time.Second))
			out, _ := io.ReadAll(c) // kelpie's answer, until it closes
			cuts <- cut{after: time.Since(t0), got: string(out)}
		}()
	}
	for range n {
		<-started
	}
	during := measure()
	if len(cuts) != 0 {
		t.Fatalf("%d slowloris connections were already cut while measuring: the measurement was not under attack", len(cuts))
	}
	worst, first := time.Duration(0), time.Duration(1<<62)
	for range n {
		c := <-cuts
		if !strings.HasPrefix(c.got, "HTTP/1.1 408") {
			t.Fatalf("slowloris connection ended with %.80q, want 408", c.got)
		}
		worst, first = max(worst, c.after), min(first, c.after)
	}
	t.Logf("real client p50/p99/max %s/%s/%s without slowloris, %s/%s/%s with %d slowloris connections; cuts after %s to %s",
		before.Quantile(0.5), before.Quantile(0.99), before.Quantile(1),
		during.Quantile(0.5), during.Quantile(0.99), during.Quantile(1), n, first, worst)
	// Latency is judged against the same client without the attack, in
	// this run, not against absolute numbers a loaded machine exceeds: a
	// typical request must not get markedly slower, and none may wait
	// anywhere near read_timeout, which is how long a request stuck behind
	// a slowloris connection (a worker or slot it holds) would wait.
	if p, p0 := during.Quantile(0.5), before.Quantile(0.5); p > 3*p0+5*time.Millisecond {
		t.Errorf("real client p50 %s under slowloris, want at most 3x the %s without it (+5ms)", p, p0)
	}
	if w := during.Quantile(1); w >= readTimeout/2 {
		t.Errorf("slowest real request %s under slowloris, want well under read_timeout (%s)", w, readTimeout)
	}
	// Not one byte of a slowloris head reached the backend: it served the
	// real requests and nothing else.
	if n, want := int64(be.Hits()), before.Total()+during.Total(); n != want {
		t.Errorf("backend served %d requests, want the %d real ones", n, want)
	}
	// Each cut is timed from the connection's own dial. Not before
	// read_timeout: slow but legitimate clients get all of it. And at
	// read_timeout, not some later clock: the bound leaves room for a
	// loaded machine's scheduling, but not for a second read_timeout (a
	// deadline re-armed by a trickled byte would never cut at all).
	if first < readTimeout {
		t.Errorf("a slowloris connection was cut after %s, before read_timeout (%s)", first, readTimeout)
	}
	if limit := readTimeout + readTimeout/2; worst > limit {
		t.Errorf("slowest slowloris connection cut after %s, want within 1.5 x read_timeout = %s", worst, limit)
	}
}

// TestHygieneReloadsStopProbes: reloads that add and remove an upstream with
// active probes (TestReloadsLeakNothing covers upstreams without them) leave
// no probe loop, checker or connection behind.
func TestHygieneReloadsStopProbes(t *testing.T) {
	one, two := startBackend(t, named("one")), startBackend(t, named("two"))
	upstream := func(name, addr string) string {
		return fmt.Sprintf(`  - name: %s
    timeouts: {idle: 300ms}
    health:
      active: {path: /health, interval: 50ms, timeout: 40ms}
    backends:
%s`, name, yamlBackends(addr))
	}
	onlyA := "upstreams:\n" + upstream("a", one.Addr)
	both := "upstreams:\n" + upstream("a", one.Addr) + upstream("b", two.Addr) +
		"routes:\n  - {path_prefix: /a/, upstream: a}\n  - {path_prefix: /b/, upstream: b}\n"
	ta := startApp(t, onlyA)
	eventually(t, 5*time.Second, "first probe", func() bool { return one.Hits() > 0 })
	ta.Get(t, "/a/x") // the test client's own connection and cleaners are part of the baseline
	runtime.GC()
	g0, fd0 := liveGoroutines(), openFDs(t)
	for i := range 30 {
		cfg := both
		if i%2 == 1 {
			cfg = onlyA
		}
		if err := os.WriteFile(ta.Path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := ta.reload(); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if i%2 == 0 {
			if code, body := ta.Get(t, "/b/x"); code != 200 || body != "two" {
				t.Fatalf("reload %d: /b/ answered %d %q", i, code, body)
			}
		}
	}
	var g, fd int
	deadline := time.Now().Add(5 * time.Second)
	eventually(t, 6*time.Second, "goroutines and descriptors back to baseline", func() bool {
		g, fd = liveGoroutines(), openFDs(t)
		if time.Now().After(deadline) {
			t.Logf("goroutines %d (baseline %d), fds %d (baseline %d)\n%s", g, g0, fd, fd0, goroutineDump())
		}
		return g <= g0+2 && fd <= fd0+1 // +1: a probe of a may be open
	})
	// Upstream b is gone: while a is probed three more times, b is not.
	a, b := one.Hits(), two.Hits()
	eventually(t, 2*time.Second, "three more probes of a", func() bool { return one.Hits() >= a+3 })
	if n := two.Hits() - b; n != 0 {
		t.Fatalf("the removed upstream's backend was probed %d more times", n)
	}
	t.Logf("30 reloads with probes: goroutines %d -> %d, descriptors %d -> %d", g0, g, fd0, fd)
}
