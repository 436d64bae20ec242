package health

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// TestVerdictCombination checks that each producer's reason takes a
// backend out on its own, and that it returns only when all are clear.
func TestVerdictCombination(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProbe()
		o := passiveOpts()
		o.Active = activeOpts(f)
		o.Breaker = breakerOpts().Breaker
		r := startRig(t, o, balancer.Options{}, "a:1", "b:1", "c:1", "d:1")
		synctest.Wait()
		a := r.b("a:1")

		// healthy + ejected => ineligible
		r.results("a:1", gw, 3)
		synctest.Wait()
		if a.State().Health != balancer.HealthHealthy || a.Down() != balancer.ReasonEjected || r.eligible("a:1") {
			t.Fatalf("healthy+ejected: health=%s down=%s eligible=%v", a.State().Health, a.Down(), r.eligible("a:1"))
		}
		// ejected + unhealthy; the ejection ends but probes still say no.
		f.set("a:1", true)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if a.Down() != balancer.ReasonUnhealthy || r.eligible("a:1") {
			t.Fatalf("after the ejection, unhealthy: down=%s eligible=%v", a.Down(), r.eligible("a:1"))
		}
		f.set("a:1", false)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if a.Down() != 0 || !r.eligible("a:1") {
			t.Fatalf("all clear: down=%s", a.Down())
		}

		// healthy + drained by an operator => ineligible; probes do not
		// undrain it.
		if _, err := r.pool.Drain("b:1"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if r.eligible("b:1") || r.b("b:1").State().Health != balancer.HealthHealthy {
			t.Fatal("drained backend eligible or not probed")
		}

		// healthy + breaker half-open => eligible, trials bounded (the
		// breaker trips on its own failures before passive's 3 in a row).
		c := r.b("c:1")
		r.results("c:1", balancer.ResultOK, 2)
		r.results("c:1", gw, 2)
		synctest.Wait()
		if c.Down() != balancer.ReasonBreakerOpen {
			t.Fatalf("c down=%s, want breaker_open", c.Down())
		}
		time.Sleep(6 * time.Second)
		synctest.Wait()
		if !r.eligible("c:1") || c.State().Breaker != balancer.BreakerHalfOpen {
			t.Fatalf("c half-open: eligible=%v breaker=%s", r.eligible("c:1"), c.State().Breaker)
		}
		admitted := 0
		var dones []func(balancer.Result)
		for range 10 {
			if d, err := c.Admit(); err == nil {
				admitted++
				dones = append(dones, d)
			}
		}
		if admitted != 2 {
			t.Fatalf("half-open admitted %d of 10, want 2", admitted)
		}
		for _, d := range dones {
			d(balancer.ResultOK)
		}
		synctest.Wait()
		if c.State().Breaker != balancer.BreakerClosed {
			t.Fatalf("breaker %s after good trials", c.State().Breaker)
		}
	})
}
