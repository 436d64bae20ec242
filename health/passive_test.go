package health

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

const gw = balancer.ResultGatewayStatus

func passiveOpts() Options {
	return Options{
		Passive: PassiveOptions{ConsecutiveFailures: 3, Ejection: 10 * time.Second, MaxEjection: 25 * time.Second, Jitter: -1},
		Breaker: BreakerOptions{Disabled: true},
	}
}

// ejectedFor measures how long addr stays ejected, to the sweep's second.
func (r *rig) ejectedFor(addr string) time.Duration {
	r.t.Helper()
	start := time.Now()
	for r.b(addr).Down()&balancer.ReasonEjected != 0 {
		time.Sleep(time.Second)
		synctest.Wait()
		if time.Since(start) > time.Hour {
			r.t.Fatalf("%s ejected for over an hour", addr)
		}
	}
	return time.Since(start)
}

func TestPassiveEjectionGrowsAndCaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRig(t, passiveOpts(), balancer.Options{}, "a:1", "b:1", "c:1", "d:1")
		synctest.Wait()
		r.results("a:1", gw, 2)
		if !r.eligible("a:1") {
			t.Fatal("ejected before consecutive_failures")
		}
		r.result("a:1", balancer.ResultTimeout)
		if r.eligible("a:1") || r.b("a:1").Down() != balancer.ReasonEjected {
			t.Fatalf("not ejected after 3 consecutive gateway errors: down=%s", r.b("a:1").Down())
		}
		// 10s, then each failure right after an ejection ends re-ejects
		// for longer: 20s, then 30s capped at 25s.
		for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
			got := r.ejectedFor("a:1")
			if got < want || got > want+sweepEvery {
				t.Fatalf("ejection %d lasted %s, want %s (+ up to one sweep)", i+1, got, want)
			}
			if !r.eligible("a:1") {
				t.Fatalf("not back after ejection %d", i+1)
			}
			if i < 3 {
				r.result("a:1", balancer.ResultConnectFailed) // one failure re-ejects
				if r.eligible("a:1") {
					t.Fatalf("one failure after ejection %d did not re-eject", i+1)
				}
			}
		}
		// One success after the ejection re-admits for good: now it takes
		// consecutive_failures again.
		r.result("a:1", balancer.ResultOK)
		r.results("a:1", gw, 2)
		if !r.eligible("a:1") {
			t.Fatal("re-ejected before consecutive_failures after a success")
		}
		// The multiplier decays one step per Ejection period in rotation:
		// after 40s it is back to 0 and the next ejection lasts 10s.
		time.Sleep(40 * time.Second)
		synctest.Wait()
		r.results("a:1", gw, 3)
		if got := r.ejectedFor("a:1"); got > 10*time.Second+sweepEvery {
			t.Fatalf("after decay the ejection lasted %s, want 10s", got)
		}
	})
}

func TestPassiveCountsOnlyConsecutiveGatewayErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRig(t, passiveOpts(), balancer.Options{}, "a:1", "b:1")
		synctest.Wait()
		for range 10 {
			r.results("a:1", gw, 2)
			r.results("a:1", balancer.ResultLocal, 5) // neither resets nor counts
			r.result("a:1", balancer.ResultOK)        // resets
		}
		if !r.eligible("a:1") {
			t.Fatal("ejected without 3 consecutive gateway errors")
		}
		r.result("a:1", balancer.ResultReset)
		r.result("a:1", balancer.ResultLocal)
		r.result("a:1", balancer.ResultTimeout)
		r.result("a:1", balancer.ResultLocal)
		r.result("a:1", balancer.ResultConnectFailed)
		if r.eligible("a:1") {
			t.Fatal("client-side outcomes between gateway errors reset the count")
		}
	})
}

func TestPassiveMaxEjectedPercent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRig(t, passiveOpts(), balancer.Options{}, "a:1", "b:1", "c:1", "d:1", "e:1")
		synctest.Wait()
		for _, a := range []string{"a:1", "b:1", "c:1", "d:1", "e:1"} {
			r.results(a, gw, 5)
		}
		ejected := 0
		for _, m := range r.pool.Snapshot().Members {
			if m.Down()&balancer.ReasonEjected != 0 {
				ejected++
			}
		}
		if ejected != 2 { // 50% of 5, rounded down
			t.Fatalf("%d of 5 ejected with max_ejected_percent 50, want 2", ejected)
		}
		// At 100% the cap is the last-eligible rule alone.
		o := passiveOpts()
		o.Passive.MaxEjectedPercent = 100
		r.c.Reconfigure(o)
		synctest.Wait()
		for _, a := range []string{"c:1", "d:1", "e:1"} {
			r.results(a, gw, 3)
		}
		if s := r.pool.Snapshot(); s.EligibleCount() != 1 {
			t.Fatalf("with 100%%, %d left eligible, want exactly 1 (never the last)", s.EligibleCount())
		}
	})
}

func TestPassiveNeverEjectsLastBackend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := passiveOpts()
		o.Passive.MaxEjectedPercent = 100
		r := startRig(t, o, balancer.Options{}, "a:1", "b:1")
		synctest.Wait()
		r.results("a:1", gw, 3)
		r.results("b:1", gw, 30)
		if r.eligible("a:1") || !r.eligible("b:1") {
			t.Fatalf("a eligible=%v b eligible=%v, want a ejected and b kept as the last", r.eligible("a:1"), r.eligible("b:1"))
		}
		// Once a is back, b's next failure ejects it.
		r.ejectedFor("a:1")
		r.result("b:1", gw)
		if r.eligible("b:1") {
			t.Fatal("b not ejected once another backend was eligible")
		}
	})
}

func TestPassiveOffAndOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := passiveOpts()
		o.Passive.ConsecutiveFailures = 0
		r := startRig(t, o, balancer.Options{}, "a:1", "b:1")
		synctest.Wait()
		r.results("a:1", gw, 100)
		if !r.eligible("a:1") {
			t.Fatal("ejected with passive detection off")
		}
		r.c.Reconfigure(passiveOpts())
		synctest.Wait()
		r.results("a:1", gw, 3)
		if r.eligible("a:1") {
			t.Fatal("not ejected after turning passive on")
		}
		r.c.Reconfigure(o) // turning it off ends ejections in progress
		synctest.Wait()
		if !r.eligible("a:1") {
			t.Fatal("ejection survived turning passive off")
		}
	})
}
