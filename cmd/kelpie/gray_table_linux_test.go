package main

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// BenchmarkGrayTable measures every row of issue 18's table with today's
// kelpie: one of three backends gets a fault for grayFault under ~300
// paced GETs a second from a client that never retries, then the fault
// ends. It is a measurement, not a test (it asserts nothing the Gray
// tests do not), so it runs only when asked for:
//
//	flock /tmp/kelpie-bench.lock go test -run '^$' -bench GrayTable -benchtime 1x ./cmd/kelpie
//
// and logs one Markdown row per fault: client errors, p99 during the
// fault, the faulty backend's share of the attempts kelpie sent, time to
// detect (to out of rotation) and time to recover (fault ended to back
// in rotation). Needs root for the network-namespace rows.
func BenchmarkGrayTable(b *testing.B) {
	rows := []string{"| fault on one backend | config | client errors | p99 during the fault | share of the faulty backend | time to detect | time to recover after the fault ends |", "|---|---|---|---|---|---|---|"}
	for range b.N {
		for _, r := range grayRows() {
			if row := measureGrayRow(b, r); row != "" { // "" when -bench left it out
				rows = append(rows, row)
			}
		}
	}
	// The parent of sub-benchmarks has no output of its own: print.
	fmt.Printf("issue 18's table, measured (fault %s, then up to %s to recover):\n%s\n", grayFault, grayRecoverMax, strings.Join(rows, "\n"))
}

const (
	grayFault      = 25 * time.Second // long enough for two runs of the 10s outlier detectors
	grayRecoverMax = 40 * time.Second // past the 30s first ejection
)

// grayRow is one fault: its label, the upstream's balance and extra
// retries keys, and how to start the faulty backend (returning its
// address, and the functions that start and end the fault).
type grayRow struct {
	label, balance, retries string
	faulty                  func(tb testing.TB) (addr string, start, end func())
	dur                     time.Duration // how long the fault lasts; 0 means grayFault
}

// switchable is a loopback backend whose delay and share of 500s change
// while it runs.
func switchable(tb testing.TB) (*testkit.Backend, *atomic.Int64, *atomic.Int64) {
	var delay, fail500, n atomic.Int64
	be := testkit.StartBackend(tb, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/health" {
			if d := delay.Load(); d > 0 {
				time.Sleep(time.Duration(d)) // the application is slow: its behaviour, not a wait
			}
			if p := fail500.Load(); p > 0 && n.Add(1)%100 < p {
				ctx.SetStatusCode(fasthttp.StatusInternalServerError)
			}
		}
		ctx.WriteString("f")
	})
	return be, &delay, &fail500
}

func grayRows() []grayRow {
	slow := func(tb testing.TB) (string, func(), func()) {
		be, delay, _ := switchable(tb)
		return be.Addr, func() { delay.Store(int64(300 * time.Millisecond)) }, func() { delay.Store(0) }
	}
	// crashed kills a loopback backend and, when the fault ends, serves
	// again on its port.
	crashed := func(tb testing.TB) (string, func(), func()) {
		be := testkit.StartBackend(tb, testkit.Named("k"))
		return be.Addr, be.Kill, func() {
			ln, err := net.Listen("tcp", be.Addr)
			if err != nil {
				tb.Fatalf("restart on %s: %v", be.Addr, err)
			}
			testkit.ServeOn(tb, &fasthttp.Server{Handler: testkit.Named("k")}, ln)
		}
	}
	frozen := func(tb testing.TB) (string, func(), func()) {
		addr, proc := startBackendProcess(tb)
		return addr, func() { _ = proc.Signal(syscall.SIGSTOP) }, func() { _ = proc.Signal(syscall.SIGCONT) }
	}
	blackHole := func(tb testing.TB) (string, func(), func()) {
		h, be := startHostGray(tb, "bh")
		return be.Addr, func() { h.Drop(tb, 100, 100) }, func() { h.Drop(tb, 0, 0) }
	}
	hedge := ", hedge: {after: 50ms}"
	return []grayRow{
		{"process killed, back after the fault", "round_robin", "", crashed, 0},
		{"frozen (SIGSTOP)", "round_robin", "", frozen, 0},
		{"frozen (SIGSTOP), hedged", "round_robin", hedge, frozen, 0},
		{"black hole (nftables drops all)", "round_robin", "", blackHole, 0},
		{"black hole (nftables drops all), hedged", "round_robin", hedge, blackHole, 0},
		{"app answers 300 ms slower", "round_robin", "", slow, 0},
		{"app answers 300 ms slower", "least_conn", "", slow, 0},
		{"app answers 300 ms slower", "least_latency", "", slow, 0},
		{"30 % of its answers are 500", "round_robin", "", func(tb testing.TB) (string, func(), func()) {
			be, _, fail := switchable(tb)
			return be.Addr, func() { fail.Store(30) }, func() { fail.Store(0) }
		}, 0},
		{"20 % packet loss towards it, hedged", "round_robin", hedge, func(tb testing.TB) (string, func(), func()) {
			h, be := startHostGray(tb, "lossy")
			return be.Addr, func() { h.Drop(tb, 20, 0) }, func() { h.Drop(tb, 0, 0) }
		}, 0},
		{"20 % packet loss towards it, hedged", "least_latency", hedge, func(tb testing.TB) (string, func(), func()) {
			h, be := startHostGray(tb, "lossy")
			return be.Addr, func() { h.Drop(tb, 20, 0) }, func() { h.Drop(tb, 0, 0) }
		}, 0},
		{"restarted 1 s after a crash", "round_robin", "", crashed, time.Second},
	}
}

// measureGrayRow runs one row and returns it as a Markdown table row.
func measureGrayRow(b *testing.B, r grayRow) string {
	var row string
	b.Run(strings.NewReplacer(" ", "_", ",", "").Replace(r.label+"/"+r.balance), func(b *testing.B) {
		a, c := startGray(b, "a", 0, nil), startGray(b, "c", 0, nil)
		addr, start, end := r.faulty(b)
		ta := startApp(b, fmt.Sprintf(`
upstreams:
  - name: web
    balance: %s
    backends:
%s    health:
      active: {interval: 1s, timeout: 1s, rise: 2, fall: 3}
      passive:
        consecutive_failures: 5
        failure_percentage: {threshold: 20, minimum_hosts: 3}
    retries: {attempts: 1%s}
    timeouts: {connect: 1s, response: 2s}
`, r.balance, yamlBackends(a.Addr, c.Addr, addr), r.retries))
		pool := ta.poolByName("web")
		eventually(b, 10*time.Second, "three backends in rotation", func() bool {
			return eligible(ta, a.Addr) && eligible(ta, c.Addr) && eligible(ta, addr)
		})
		// ~300 GETs a second: 8 workers, each pausing 25ms after a request.
		opts := testkit.LoadOptions{Workers: 8, Requests: 1 << 20, Between: func(w, i int) { pause(25 * time.Millisecond) }}
		warm := opts
		warm.Requests = 40
		testkit.StartLoad(ta.ProxyAddr, warm).Wait() // pooled connections everywhere
		attempts := func() (faulty, all uint64) {
			for _, m := range pool.Snapshot().Members {
				all += m.Requests()
				if m.Address() == addr {
					faulty = m.Requests()
				}
			}
			return
		}
		f0, all0 := attempts()
		load := testkit.StartLoad(ta.ProxyAddr, opts)
		start()
		t0 := time.Now()
		detect, dur := "never", r.dur
		if dur == 0 {
			dur = grayFault
		}
		for time.Since(t0) < dur {
			if detect == "never" && !eligible(ta, addr) {
				detect = fmt.Sprintf("%.2f s (%s)", time.Since(t0).Seconds(), down(ta, addr))
			}
			pause(10 * time.Millisecond)
		}
		f1, all1 := attempts()
		run := load.Stop()
		load = testkit.StartLoad(ta.ProxyAddr, opts)
		defer load.Stop()
		end()
		t1 := time.Now()
		ttr := "–"
		if detect != "never" {
			ttr = fmt.Sprintf("over %s", grayRecoverMax)
			for time.Since(t1) < grayRecoverMax {
				if eligible(ta, addr) {
					ttr = fmt.Sprintf("%.2f s", time.Since(t1).Seconds())
					break
				}
				pause(10 * time.Millisecond)
			}
		}
		after := load.Stop()
		row = fmt.Sprintf("| %s | %s%s | %d of %d (then %d of %d) | %.1f ms (max %.0f ms) | %.1f %% | %s | %s |",
			r.label, r.balance, r.retries, run.Failed(), run.Total(), after.Failed(), after.Total(),
			float64(run.Quantile(0.99).Microseconds())/1000, float64(run.Quantile(1).Milliseconds()),
			100*float64(f1-f0)/float64(max(all1-all0, 1)), detect, ttr)
		b.Logf("%s, %s: fault: %s; after: %s\n%s", r.label, r.balance, run, after, row)
	})
	return row
}
