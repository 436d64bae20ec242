package health

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

func breakerOpts() Options {
	return Options{Breaker: BreakerOptions{
		FailureRatio: 0.5, MinRequests: 4, Window: 10 * time.Second, BucketPeriod: time.Second,
		OpenTimeout: 5 * time.Second, HalfOpenRequests: 2,
	}}
}

func TestBreakerTransitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRig(t, breakerOpts(), balancer.Options{}, "a:1", "b:1")
		synctest.Wait()
		a := r.b("a:1")
		r.results("a:1", balancer.ResultOK, 2)
		r.result("a:1", gw)
		synctest.Wait()
		if !r.eligible("a:1") {
			t.Fatal("opened below min_requests")
		}
		r.result("a:1", balancer.ResultTimeout) // 2 of 4 failed: ratio 0.5
		synctest.Wait()
		if r.eligible("a:1") || a.Down() != balancer.ReasonBreakerOpen || a.State().Breaker != balancer.BreakerOpen {
			t.Fatalf("breaker did not open: down=%s breaker=%s", a.Down(), a.State().Breaker)
		}
		if _, err := a.Admit(); !errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("open breaker admitted: %v", err)
		}
		// Open -> half-open happens only when the breaker is consulted;
		// the checker's sweep does that, with no traffic at all.
		time.Sleep(5*time.Second + sweepEvery)
		synctest.Wait()
		if !r.eligible("a:1") || a.State().Breaker != balancer.BreakerHalfOpen {
			t.Fatalf("not half-open after the timeout: breaker=%s down=%s", a.State().Breaker, a.Down())
		}
		// Half-open admits exactly HalfOpenRequests trials.
		d1, err1 := a.Admit()
		d2, err2 := a.Admit()
		_, err3 := a.Admit()
		if err1 != nil || err2 != nil || !errors.Is(err3, ErrTrialsInFlight) {
			t.Fatalf("half-open admits: %v %v %v, want nil nil ErrTrialsInFlight", err1, err2, err3)
		}
		d1(balancer.ResultOK)
		d2(gw) // a failed trial re-opens
		synctest.Wait()
		if r.eligible("a:1") || a.State().Breaker != balancer.BreakerOpen {
			t.Fatalf("a failed trial did not re-open: %s", a.State().Breaker)
		}
		time.Sleep(5*time.Second + sweepEvery)
		synctest.Wait()
		r.results("a:1", balancer.ResultOK, 2)
		synctest.Wait()
		if !r.eligible("a:1") || a.State().Breaker != balancer.BreakerClosed {
			t.Fatalf("two good trials did not close it: %s", a.State().Breaker)
		}
		var opened uint64
		a.Transitions(func(rs balancer.Reason, on bool, n uint64) {
			if rs == balancer.ReasonBreakerOpen && on {
				opened = n
			}
		})
		if opened != 2 {
			t.Fatalf("breaker_open set %d times, want 2", opened)
		}
	})
}

func TestBreakerRollingWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRig(t, breakerOpts(), balancer.Options{}, "a:1", "b:1")
		synctest.Wait()
		r.results("a:1", gw, 3) // 3 failures, below min_requests
		time.Sleep(11 * time.Second)
		synctest.Wait()
		r.results("a:1", balancer.ResultOK, 3)
		r.result("a:1", gw) // 1 of 4 in the window: old failures aged out
		synctest.Wait()
		if !r.eligible("a:1") {
			t.Fatal("failures older than the window tripped the breaker")
		}
	})
}

func TestBreakerIgnoresLocalAndRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := breakerOpts()
		o.Passive = PassiveOptions{ConsecutiveFailures: 3, Jitter: -1}
		r := startRig(t, o, balancer.Options{}, "a:1", "b:1")
		synctest.Wait()
		a := r.b("a:1")
		r.results("a:1", balancer.ResultLocal, 100)
		r.result("a:1", gw)
		r.results("a:1", balancer.ResultOK, 2)
		synctest.Wait()
		if !r.eligible("a:1") {
			t.Fatal("ResultLocal outcomes counted as attempts")
		}
		r.result("a:1", gw) // 2 of 4: opens; the passive count is 1
		synctest.Wait()
		if a.Down() != balancer.ReasonBreakerOpen {
			t.Fatalf("down=%s, want breaker_open only", a.Down())
		}
		for range 10 {
			if _, err := a.Admit(); err == nil {
				t.Fatal("open breaker admitted")
			}
		}
		time.Sleep(5*time.Second + sweepEvery)
		synctest.Wait()
		// Refusals did not feed passive detection.
		if a.Down() != 0 {
			t.Fatalf("down=%s after half-open", a.Down())
		}
		if n := a.Guard().(*guard).fails.Load(); n != 1 {
			t.Fatalf("passive count %d after refusals, want 1", n)
		}
	})
}

func TestBreakerDisabledAndReconfigured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRig(t, Options{Breaker: BreakerOptions{Disabled: true}}, balancer.Options{}, "a:1", "b:1")
		synctest.Wait()
		a := r.b("a:1")
		if allocs := testing.AllocsPerRun(100, func() {
			done, _ := a.Admit()
			done(balancer.ResultOK)
		}); allocs != 0 {
			t.Fatalf("Admit+done without a breaker: %v allocs, want 0", allocs)
		}
		r.results("a:1", gw, 50)
		if !r.eligible("a:1") {
			t.Fatal("disabled breaker opened")
		}
		r.c.Reconfigure(breakerOpts())
		synctest.Wait()
		r.results("a:1", gw, 4)
		synctest.Wait()
		if a.State().Breaker != balancer.BreakerOpen {
			t.Fatal("breaker enabled by Reconfigure did not open")
		}
		// Same settings: the open breaker is kept.
		r.c.Reconfigure(breakerOpts())
		synctest.Wait()
		if a.State().Breaker != balancer.BreakerOpen {
			t.Fatal("Reconfigure with unchanged settings reset the breaker")
		}
		r.c.Reconfigure(Options{Breaker: BreakerOptions{Disabled: true}})
		synctest.Wait()
		if a.State().Breaker != balancer.BreakerClosed || !r.eligible("a:1") {
			t.Fatal("disabling the breaker left the backend out")
		}
	})
}

// TestBreakerTrialsAndLateResults: half-open admits HalfOpenRequests trials
// at a time (a finished trial frees its slot; a local outcome counts for
// nothing), and a result of an attempt admitted while the breaker was still
// closed, finishing after it opened, is not taken for a trial's.
func TestBreakerTrialsAndLateResults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRig(t, breakerOpts(), balancer.Options{}, "a:1", "b:1")
		synctest.Wait()
		a := r.b("a:1")
		late, err := a.Admit() // in flight across the trip and the timeout
		if err != nil {
			t.Fatal(err)
		}
		r.results("a:1", gw, 4)
		synctest.Wait()
		if a.State().Breaker != balancer.BreakerOpen {
			t.Fatalf("breaker %s, want open", a.State().Breaker)
		}
		time.Sleep(5*time.Second + sweepEvery)
		synctest.Wait()
		if a.State().Breaker != balancer.BreakerHalfOpen {
			t.Fatalf("breaker %s, want half-open", a.State().Breaker)
		}
		d1, err1 := a.Admit()
		d2, err2 := a.Admit()
		if _, err := a.Admit(); err1 != nil || err2 != nil || !errors.Is(err, ErrTrialsInFlight) {
			t.Fatalf("half-open admits: %v %v %v", err1, err2, err)
		}
		d1(balancer.ResultLocal) // frees its slot, counts for nothing
		d3, err := a.Admit()
		if err != nil {
			t.Fatalf("a finished trial did not free its slot: %v", err)
		}
		late(balancer.ResultOK) // admitted while closed: not a trial
		d2(balancer.ResultOK)
		synctest.Wait()
		if a.State().Breaker != balancer.BreakerHalfOpen {
			t.Fatalf("breaker %s after one successful trial (and a late result), want still half-open", a.State().Breaker)
		}
		d3(balancer.ResultOK)
		synctest.Wait()
		if a.State().Breaker != balancer.BreakerClosed || !r.eligible("a:1") {
			t.Fatalf("breaker %s after two successful trials, want closed", a.State().Breaker)
		}
	})
}
