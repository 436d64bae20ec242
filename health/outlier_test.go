package health

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// traffic records n finished attempts on b as the proxy does: each took
// rtt and answered status (a gateway error when result says so).
func traffic(b *balancer.Backend, n int, rtt time.Duration, status int, result balancer.Result) {
	for range n {
		b.Acquire()
		b.Observe(rtt, status, result.GatewayError())
		b.Release(result)
	}
}

// outlierOpts has only the outlier detectors given, no breaker, no
// consecutive-failure ejection, a 10s base ejection without jitter.
func outlierOpts(p PassiveOptions) Options {
	p.Ejection, p.MaxEjection, p.Jitter = 10*time.Second, 100*time.Second, -1
	return Options{Passive: p, Breaker: BreakerOptions{Disabled: true}}
}

// interval lets one detector interval (10s) pass, plus a sweep.
func interval() {
	time.Sleep(10*time.Second + sweepEvery)
	synctest.Wait()
}

func TestLatencyOutlierEjected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRig(t, outlierOpts(PassiveOptions{Latency: &LatencyOptions{Factor: 3, MinRequests: 20, Interval: 10 * time.Second}}),
			balancer.Options{}, "a:1", "b:1", "c:1")
		time.Sleep(sweepEvery) // the first run only takes baselines
		synctest.Wait()
		traffic(r.b("a:1"), 50, time.Millisecond, 200, balancer.ResultOK)
		traffic(r.b("b:1"), 50, 2*time.Millisecond, 200, balancer.ResultOK)
		traffic(r.b("c:1"), 50, 301*time.Millisecond, 200, balancer.ResultOK)
		interval()
		if d := r.b("c:1").Down(); d != balancer.ReasonSlow {
			t.Fatalf("slow backend: down=%s, want slow", d)
		}
		if !r.eligible("a:1") || !r.eligible("b:1") {
			t.Fatal("a fast backend was ejected")
		}
		// The ejection ends like any other: after the (growing) ejection time.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if !r.eligible("c:1") {
			t.Fatalf("still out after the ejection time: %s", r.b("c:1").Down())
		}
	})
}

func TestLatencyOutlierThresholds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		slow      time.Duration
		n         int
		wantOut   bool
		fastOther time.Duration
	}{
		{"under the factor", 5 * time.Millisecond, 50, false, 2 * time.Millisecond},
		{"over the factor but within the floor", 900 * time.Microsecond, 50, false, 200 * time.Microsecond},
		{"too few requests", time.Second, 10, false, time.Millisecond},
		{"over both", 40 * time.Millisecond, 50, true, 2 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := startRig(t, outlierOpts(PassiveOptions{Latency: &LatencyOptions{Factor: 3, MinRequests: 20, Interval: 10 * time.Second}}),
					balancer.Options{}, "a:1", "b:1", "c:1")
				time.Sleep(sweepEvery)
				synctest.Wait()
				traffic(r.b("a:1"), 50, tc.fastOther, 200, balancer.ResultOK)
				traffic(r.b("b:1"), 50, tc.fastOther, 200, balancer.ResultOK)
				traffic(r.b("c:1"), tc.n, tc.slow, 200, balancer.ResultOK)
				interval()
				if out := r.b("c:1").Down() == balancer.ReasonSlow; out != tc.wantOut {
					t.Fatalf("ejected=%v, want %v", out, tc.wantOut)
				}
			})
		})
	}
}

func TestFailurePercentageOutlier(t *testing.T) {
	for _, gatewayOnly := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			r := startRig(t, outlierOpts(PassiveOptions{CountGatewayOnly: gatewayOnly,
				FailurePercentage: &FailurePercentageOptions{Threshold: 20, MinimumHosts: 3, RequestVolume: 50, Interval: 10 * time.Second}}),
				balancer.Options{}, "a:1", "b:1", "c:1")
			time.Sleep(sweepEvery)
			synctest.Wait()
			traffic(r.b("a:1"), 100, time.Millisecond, 200, balancer.ResultOK)
			traffic(r.b("b:1"), 95, time.Millisecond, 200, balancer.ResultOK)
			traffic(r.b("b:1"), 5, time.Millisecond, 404, balancer.ResultOK) // client errors never count
			traffic(r.b("c:1"), 70, time.Millisecond, 200, balancer.ResultOK)
			traffic(r.b("c:1"), 30, time.Millisecond, 500, balancer.ResultOK)
			interval()
			want := balancer.ReasonErrors
			if gatewayOnly {
				want = 0 // a 500 is no gateway error
			}
			if d := r.b("c:1").Down(); d != want {
				t.Fatalf("gateway only %v: 30%% 500s: down=%s, want %s", gatewayOnly, d, want)
			}
			if !r.eligible("a:1") || !r.eligible("b:1") {
				t.Fatal("a healthy backend was ejected")
			}
		})
	}
}

func TestSuccessRateOutlier(t *testing.T) {
	for _, n := range []int{3, 6} {
		synctest.Test(t, func(t *testing.T) {
			addrs := []string{"a:1", "b:1", "c:1", "d:1", "e:1", "f:1"}[:n]
			r := startRig(t, outlierOpts(PassiveOptions{SuccessRate: &SuccessRateOptions{StdevFactor: 1.9, MinimumHosts: 3, RequestVolume: 100, Interval: 10 * time.Second}}),
				balancer.Options{}, addrs...)
			time.Sleep(sweepEvery)
			synctest.Wait()
			for _, a := range addrs[1:] {
				traffic(r.b(a), 100, time.Millisecond, 200, balancer.ResultOK)
			}
			traffic(r.b("a:1"), 70, time.Millisecond, 200, balancer.ResultOK)
			traffic(r.b("a:1"), 30, time.Millisecond, 503, balancer.ResultGatewayStatus)
			interval()
			// With a 1.9 stdev factor one host in three can never be below
			// the bar (its z-score is at most 2/sqrt(3)); in six it is.
			want := n == 6
			if out := r.b("a:1").Down() == balancer.ReasonErrors; out != want {
				t.Fatalf("%d hosts: ejected=%v, want %v", n, out, want)
			}
			for _, a := range addrs[1:] {
				if !r.eligible(a) {
					t.Fatalf("%s was ejected", a)
				}
			}
		})
	}
}

// TestProbeEndsEjection: after an ejection for gateway errors, rise passing
// probes put the backend back (on probation), long before the ejection
// time; with KeepEjectedOnProbe they do not. A latency ejection is never
// ended by probes.
func TestProbeEndsEjection(t *testing.T) {
	for _, keep := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			f := newFakeProbe()
			o := passiveOpts() // 3 consecutive failures, 10s ejection
			o.Passive.Ejection = time.Minute
			o.Passive.MaxEjection = time.Hour
			o.Passive.KeepEjectedOnProbe = keep
			o.Active = activeOpts(f) // every 1s, rise 2
			r := startRig(t, o, balancer.Options{}, "a:1", "b:1", "c:1")
			synctest.Wait()
			r.results("a:1", balancer.ResultConnectFailed, 3)
			if r.eligible("a:1") {
				t.Fatal("not ejected")
			}
			time.Sleep(2*time.Second + time.Millisecond) // two probe runs, both passing
			synctest.Wait()
			if r.eligible("a:1") == keep {
				t.Fatalf("keep=%v: eligible=%v after 2 passing probes", keep, r.eligible("a:1"))
			}
			if keep {
				return
			}
			r.result("a:1", balancer.ResultConnectFailed) // on probation: one failure re-ejects
			if r.eligible("a:1") {
				t.Fatal("not on probation after the probes ended the ejection")
			}
		})
	}
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProbe()
		o := outlierOpts(PassiveOptions{Latency: &LatencyOptions{Factor: 3, MinRequests: 20, Interval: 10 * time.Second}})
		o.Passive.Ejection = time.Minute
		o.Active = activeOpts(f)
		r := startRig(t, o, balancer.Options{}, "a:1", "b:1", "c:1")
		time.Sleep(sweepEvery)
		synctest.Wait()
		traffic(r.b("a:1"), 50, time.Millisecond, 200, balancer.ResultOK)
		traffic(r.b("b:1"), 50, time.Millisecond, 200, balancer.ResultOK)
		traffic(r.b("c:1"), 50, time.Second, 200, balancer.ResultOK)
		interval()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if d := r.b("c:1").Down(); d != balancer.ReasonSlow {
			t.Fatalf("slow backend after 5 passing probes: down=%s, want slow", d)
		}
	})
}

// TestProbesStartOnSchedule: a probe that takes most of the interval does
// not push the next one back: probes start every interval.
func TestProbesStartOnSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var starts []time.Time
		a := &ActiveOptions{Interval: 2 * time.Second, Timeout: 1500 * time.Millisecond, Rise: 2, Fall: 3, Jitter: -1,
			Probe: func(ctx context.Context, _ string) error {
				mu.Lock()
				starts = append(starts, time.Now())
				mu.Unlock()
				<-ctx.Done() // times out
				return ctx.Err()
			}}
		startRig(t, Options{Active: a}, balancer.Options{}, "a:1")
		time.Sleep(7 * time.Second)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(starts) != 4 {
			t.Fatalf("%d probes in 7s, want 4 (at 0, 2, 4, 6s)", len(starts))
		}
		for i := 1; i < len(starts); i++ {
			if gap := starts[i].Sub(starts[i-1]); gap != 2*time.Second {
				t.Errorf("probe %d started %s after the previous one, want 2s", i, gap)
			}
		}
	})
}
