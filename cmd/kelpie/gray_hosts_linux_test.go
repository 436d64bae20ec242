package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// Gray failures between hosts (issue 18): the faulty backend runs on
// another host (a network namespace joined by a veth pair, see
// testkit.Host) whose link nftables makes drop packets, so kelpie sees what
// a real network gives: no reset, writes that vanish, connects that time
// out, retransmissions. Needs root (CI has it); -short skips these.

// startHostGray starts a countingBackend named name on a new Host.
func startHostGray(t testing.TB, name string) (*testkit.Host, *countingBackend) {
	t.Helper()
	h := testkit.NewHost(t)
	cb := &countingBackend{}
	cb.Backend = testkit.ServeOn(t, &fasthttp.Server{Handler: cb.handler(name, 0, nil)}, h.Listen(t))
	// Reset its connections before the graceful Close, which would wait
	// for connections a black hole keeps open.
	t.Cleanup(cb.Kill)
	return h, cb
}

// grayHostConfig is the setup: three backends, probes every 1s
// with fall 3 / rise 2, consecutive_failures 5, retries 1, connect 1s,
// response 2s, with extra lines for the upstream (balance, hedge) and
// extra passive keys.
func grayHostConfig(extra, passive string, addrs ...string) string {
	return fmt.Sprintf(`
upstreams:
  - name: web
%s    backends:
%s    health:
      active: {interval: 1s, timeout: 900ms, rise: 2, fall: 3}
      passive: {consecutive_failures: 5%s}
    timeouts: {connect: 1s, response: 2s}
`, extra, yamlBackends(addrs...), passive)
}

// TestGrayBlackHoledHostE2E: the host of one of three backends drops
// every packet both ways, with kelpie holding pooled connections to it.
// With hedging after 50ms no client errs and the p99 stays under the hedge
// delay + the normal tail (hedgeBound); probes take it out of rotation
// within fall x interval + timeout; once the link is back it is back in
// rotation within rise x interval + 1s.
func TestGrayBlackHoledHostE2E(t *testing.T) {
	a, b := startGray(t, "a", 0, nil), startGray(t, "b", 0, nil)
	h, bh := startHostGray(t, "bh")
	ta := startApp(t, grayHostConfig("    retries: {attempts: 1, hedge: {after: 50ms}}\n", "", a.Addr, b.Addr, bh.Addr))
	eventually(t, 5*time.Second, "all three healthy", func() bool {
		return eligible(ta, a.Addr) && eligible(ta, b.Addr) && eligible(ta, bh.Addr)
	})
	// Traffic first, so kelpie holds pooled connections to it.
	if warm := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 30, Between: paced}).Wait(); warm.Failed() != 0 {
		t.Fatalf("before the fault: %s", warm)
	}
	if bh.served.Load() == 0 {
		t.Fatal("the backend on the other host got no traffic before the fault")
	}

	h.Drop(t, 100, 100)
	start := time.Now()
	var detect time.Duration
	run, normal := pairedLoad(t, ta, 0, func() {
		// fall x interval + timeout, and slack for a busy machine.
		eventually(t, 3*time.Second+900*time.Millisecond+2*time.Second, "black-holed host out of rotation", func() bool { return !eligible(ta, bh.Addr) })
		detect = time.Since(start)
		pause(time.Second) // traffic while it is out
	})
	stats := ta.metrics.Upstream(ta.poolByName("web"))
	t.Logf("black hole: left rotation after %s (%s); %s; %d hedges; control: p99 %s p99.9 %s", detect.Round(time.Millisecond), down(ta, bh.Addr), run, stats.Hedges.Load(), normal.Quantile(0.99), normal.Quantile(0.999))
	if run.Failed() != 0 {
		t.Fatalf("client errors during the black hole: %s", run)
	}
	if p99, bound := run.Quantile(0.99), hedgeBound(50*time.Millisecond, normal); p99 > bound {
		t.Fatalf("p99 %s during the black hole, want under the hedge delay + the control's p99.9 = %s", p99, bound)
	}
	if worst := run.Quantile(1); worst >= time.Second {
		t.Fatalf("slowest request took %s: it waited for the connect or response timeout", worst)
	}
	if stats.Hedges.Load() == 0 {
		t.Fatal("no request was hedged: the black-holed host got no traffic")
	}

	h.Drop(t, 0, 0)
	back := time.Now()
	eventually(t, 10*time.Second, "host back in rotation", func() bool { return eligible(ta, bh.Addr) })
	ttr := time.Since(back)
	t.Logf("link restored: back in rotation after %s", ttr.Round(time.Millisecond))
	if limit := 2*time.Second + time.Second; ttr > limit {
		t.Fatalf("recovery took %s, want within rise x interval + 1s = %s", ttr, limit)
	}
}

// TestGrayLossyHostE2E: 20% of the packets towards one of three backends'
// host are lost (each costs a retransmission, 200ms or more). With
// least_latency its share falls under 15% (round robin gives it a third)
// and, hedged after 50ms, the p99 stays under the hedge delay + the normal
// tail (hedgeBound); under round robin latency outlier detection ejects
// it as slow, and until then hedging bounds the p99 the same way (415ms without).
func TestGrayLossyHostE2E(t *testing.T) {
	t.Run("least_latency hedged", func(t *testing.T) {
		a, b := startGray(t, "a", 0, nil), startGray(t, "b", 0, nil)
		h, lossy := startHostGray(t, "lossy")
		ta := startApp(t, grayHostConfig("    balance: least_latency\n    retries: {attempts: 1, hedge: {after: 50ms}}\n", "", a.Addr, b.Addr, lossy.Addr))
		if warm := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 150, Between: paced}).Wait(); warm.Failed() != 0 {
			t.Fatalf("before the fault: %s", warm)
		}
		before := [3]int64{a.served.Load(), b.served.Load(), lossy.served.Load()}
		well := float64(before[2]) / float64(before[0]+before[1]+before[2])
		t.Logf("before the loss: %d of %d requests (%.1f%%) on its host", before[2], before[0]+before[1]+before[2], 100*well)
		if well < 0.15 {
			t.Fatalf("before the fault the host got %d of %d requests (%.1f%%): its share cannot fall", before[2], before[0]+before[1]+before[2], 100*well)
		}
		h.Drop(t, 20, 0)
		run, normal := pairedLoad(t, ta, 300, nil)
		got := [3]int64{a.served.Load() - before[0], b.served.Load() - before[1], lossy.served.Load() - before[2]}
		share := float64(got[2]) / float64(got[0]+got[1]+got[2])
		t.Logf("20%% loss, least_latency: %s; lossy host got %d of %d (%.1f%%); control: p99 %s p99.9 %s", run, got[2], got[0]+got[1]+got[2], 100*share, normal.Quantile(0.99), normal.Quantile(0.999))
		if run.Failed() != 0 {
			t.Fatalf("client errors: %s", run)
		}
		if share >= 0.15 {
			t.Fatalf("lossy host's share %.1f%%, want under 15%% (a third under round robin)", 100*share)
		}
		if p99, bound := run.Quantile(0.99), hedgeBound(50*time.Millisecond, normal); p99 > bound {
			t.Fatalf("p99 %s, want under the hedge delay + the control's p99.9 = %s", p99, bound)
		}
		if worst := run.Quantile(1); worst >= time.Second {
			t.Fatalf("slowest request took %s: it waited for a retransmission past the connect timeout", worst)
		}
	})
	t.Run("round robin hedged ejects it as slow", func(t *testing.T) {
		a, b := startGray(t, "a", 0, nil), startGray(t, "b", 0, nil)
		h, lossy := startHostGray(t, "lossy")
		ta := startApp(t, grayHostConfig("    retries: {attempts: 1, hedge: {after: 50ms}}\n", ", latency: {factor: 3, min_requests: 5, interval: 1s}", a.Addr, b.Addr, lossy.Addr))
		h.Drop(t, 20, 0)
		start := time.Now()
		run, normal := pairedLoad(t, ta, 0, func() {
			eventually(t, 10*time.Second, "lossy host ejected as slow", func() bool { return down(ta, lossy.Addr) == balancer.ReasonSlow })
		})
		t.Logf("20%% loss, round robin: ejected as slow after %s; %s; control: p99 %s p99.9 %s", time.Since(start).Round(time.Millisecond), run, normal.Quantile(0.99), normal.Quantile(0.999))
		if run.Failed() != 0 {
			t.Fatalf("client errors: %s", run)
		}
		if p99, bound := run.Quantile(0.99), hedgeBound(50*time.Millisecond, normal); p99 > bound {
			t.Fatalf("p99 %s until it was ejected, want under the hedge delay + the control's p99.9 = %s", p99, bound)
		}
	})
}
