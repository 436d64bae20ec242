package health

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

func activeOpts(f *fakeProbe) *ActiveOptions {
	return &ActiveOptions{Interval: time.Second, Timeout: 100 * time.Millisecond, Rise: 2, Fall: 3, Jitter: -1, Probe: f.probe}
}

func TestActiveRiseFall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProbe()
		r := startRig(t, Options{Active: activeOpts(f)}, balancer.Options{}, "a:1", "b:1")
		synctest.Wait()
		if n := f.count("a:1"); n != 1 {
			t.Fatalf("probes at start: %d, want 1 (probe immediately)", n)
		}
		if h := r.b("a:1").State().Health; h != balancer.HealthHealthy {
			t.Fatalf("after a passing first probe: %s", h)
		}
		f.set("a:1", true)
		for i := 1; i <= 3; i++ {
			time.Sleep(time.Second)
			synctest.Wait()
			if want := i < 3; r.eligible("a:1") != want {
				t.Fatalf("after %d failed probes: eligible=%v, want %v", i, !want, want)
			}
		}
		if d := r.b("a:1").Down(); d != balancer.ReasonUnhealthy {
			t.Fatalf("down = %s, want unhealthy", d)
		}
		f.set("a:1", false)
		time.Sleep(time.Second)
		synctest.Wait()
		if r.eligible("a:1") {
			t.Fatal("eligible after one pass with rise=2")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if !r.eligible("a:1") || r.b("a:1").State().Health != balancer.HealthHealthy {
			t.Fatal("not back after rise=2 passes")
		}
		if !r.eligible("b:1") {
			t.Fatal("b:1 was affected")
		}
		var set, cleared uint64
		r.b("a:1").Transitions(func(rs balancer.Reason, on bool, n uint64) {
			if rs == balancer.ReasonUnhealthy && on {
				set = n
			} else if rs == balancer.ReasonUnhealthy {
				cleared = n
			}
		})
		if set != 1 || cleared != 1 {
			t.Fatalf("transitions set=%d cleared=%d, want 1 and 1", set, cleared)
		}
	})
}

func TestActiveFlapNeverTrips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProbe()
		o := activeOpts(f)
		o.Fall = 2
		r := startRig(t, Options{Active: o}, balancer.Options{}, "a:1", "b:1")
		synctest.Wait()
		for i := range 20 {
			f.set("a:1", i%2 == 0) // F, P, F, P, ...
			time.Sleep(time.Second)
			synctest.Wait()
			if !r.eligible("a:1") {
				t.Fatalf("flapping F,P,F,... tripped fall=2 at probe %d", i+1)
			}
		}
	})
}

func TestActiveFirstProbeFailureAndJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProbe()
		f.set("dead:1", true)
		f.set("late:1", true)
		r := startRig(t, Options{Active: activeOpts(f)}, balancer.Options{}, "a:1", "dead:1")
		synctest.Wait()
		// Unknown gets the benefit of the doubt: fall failures, like healthy.
		for i := 1; i <= 3; i++ {
			if r.eligible("dead:1") != (i < 3) || (i < 3 && r.b("dead:1").State().Health != balancer.HealthUnknown) {
				t.Fatalf("after %d failed probes from unknown: eligible=%v health=%s", i, r.eligible("dead:1"), r.b("dead:1").State().Health)
			}
			if i < 3 {
				time.Sleep(time.Second)
				synctest.Wait()
			}
		}
		time.Sleep(500 * time.Millisecond)
		// A backend joining a running pool is probed at once, not at the
		// next interval.
		r.pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "a:1"}, {Address: "dead:1"}, {Address: "late:1"}})
		synctest.Wait()
		if n := f.count("late:1"); n != 1 {
			t.Fatalf("joined backend probed %d times at once, want 1", n)
		}
		if !r.eligible("late:1") {
			t.Fatal("one failed probe took a new backend out")
		}
		// Leaving stops its probes.
		r.pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "a:1"}})
		synctest.Wait()
		n := f.count("late:1")
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if m := f.count("late:1"); m != n {
			t.Fatalf("removed backend still probed: %d -> %d", n, m)
		}
	})
}

func TestActiveJitterAndUnhealthyInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProbe()
		o := activeOpts(f)
		o.Jitter = 0.1
		o.UnhealthyInterval = 250 * time.Millisecond
		r := startRig(t, Options{Active: o}, balancer.Options{}, "a:1", "b:1")
		time.Sleep(20 * time.Second)
		synctest.Wait()
		times := f.probedAt("a:1")
		distinct := map[time.Duration]bool{}
		for i := 1; i < len(times); i++ {
			gap := times[i].Sub(times[i-1])
			if gap < 900*time.Millisecond || gap > time.Second {
				t.Fatalf("gap %d = %s, want within [0.9s, 1s]", i, gap)
			}
			distinct[gap] = true
		}
		if len(distinct) < 5 {
			t.Fatalf("only %d distinct gaps over %d probes: no jitter", len(distinct), len(times))
		}
		if a, b := f.probedAt("a:1"), f.probedAt("b:1"); a[len(a)-1].Equal(b[len(b)-1]) && a[len(a)-2].Equal(b[len(b)-2]) {
			t.Fatal("backends probed in lockstep")
		}
		f.set("b:1", true)
		n := f.count("b:1")
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if r.eligible("b:1") {
			t.Fatal("b:1 still eligible")
		}
		// 3 falls at ~1s, then ~4 probes per second while unhealthy.
		if got := f.count("b:1") - n; got < 25 {
			t.Fatalf("%d probes in 10s while unhealthy with a 250ms unhealthy interval", got)
		}
	})
}

func TestActiveReconfigureKeepsState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProbe()
		f.set("a:1", true)
		r := startRig(t, Options{Active: activeOpts(f)}, balancer.Options{}, "a:1", "b:1")
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if r.eligible("a:1") {
			t.Fatal("a:1 eligible")
		}
		o := activeOpts(f)
		o.Rise = 1
		r.c.Reconfigure(Options{Active: o})
		synctest.Wait()
		if r.eligible("a:1") {
			t.Fatal("reconfigure reset a:1's verdict")
		}
		f.set("a:1", false)
		time.Sleep(time.Second)
		synctest.Wait()
		if !r.eligible("a:1") {
			t.Fatal("new rise=1 not applied")
		}
		f.set("b:1", true)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if r.eligible("b:1") {
			t.Fatal("b:1 eligible after 3 failed probes")
		}
		r.c.Reconfigure(Options{}) // probing off: nobody stays unhealthy
		synctest.Wait()
		if !r.eligible("b:1") {
			t.Fatal("turning active probing off left b:1 out")
		}
		for _, b := range r.pool.Snapshot().Members {
			if b.State().Health != balancer.HealthUnknown {
				t.Errorf("%s: health %s with probing off, want unknown", b.Address(), b.State().Health)
			}
		}
		n := f.count("b:1")
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if f.count("b:1") != n {
			t.Fatal("probes continue with active probing off")
		}
	})
}
