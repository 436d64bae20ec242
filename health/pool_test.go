package health

// These tests drive balancer.Pool's tier rules (backups, failback, panic
// threshold) and slow start through the health layer, the way they happen
// in production.

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// picks counts where n picks go.
func picks(p *balancer.Pool, n int) map[string]int {
	out := map[string]int{}
	for i := range n {
		if b := p.Pick(uint64(i)*0x9e3779b97f4a7c15, nil); b != nil {
			out[b.Address()]++
		} else {
			out["<none>"]++
		}
	}
	return out
}

func TestBackupsAndFailback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProbe()
		r := startRig(t, Options{Active: activeOpts(f)}, balancer.Options{PanicThreshold: 50}, "a:1", "b:1", "x:1+", "y:1+")
		synctest.Wait()
		got := picks(r.pool, 1000)
		if got["x:1"]+got["y:1"] != 0 || got["a:1"]+got["b:1"] != 1000 {
			t.Fatalf("primaries healthy: %v, want backups 0", got)
		}
		f.set("a:1", true)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := picks(r.pool, 1000); got["b:1"] != 1000 {
			// 1 of 2 primaries is exactly 50%: no panic, no backups
			t.Fatalf("one primary down: %v, want all on b:1", got)
		}
		f.set("b:1", true)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		got = picks(r.pool, 1000)
		if got["x:1"]+got["y:1"] != 1000 || got["x:1"] == 0 || got["y:1"] == 0 {
			t.Fatalf("all primaries down: %v, want all on the backups", got)
		}
		if tier := r.pool.Snapshot().Tier; tier != balancer.TierBackup {
			t.Fatalf("tier %s, want backup", tier)
		}
		f.set("b:1", false) // failback as soon as one primary is back
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := picks(r.pool, 1000); got["b:1"] != 1000 {
			t.Fatalf("after failback: %v, want all on b:1", got)
		}
	})
}

func TestPanicThreshold(t *testing.T) {
	for _, tc := range []struct {
		threshold int
		wantTier  balancer.Tier
		wantSet   int
	}{
		{50, balancer.TierPanic, 3},   // 1 of 4 < 50%: spread over all but the breaker-open one
		{0, balancer.TierPrimary, 1},  // panic off: only the eligible one
		{25, balancer.TierPrimary, 1}, // 1 of 4 = 25% is not below 25%
	} {
		synctest.Test(t, func(t *testing.T) {
			f := newFakeProbe()
			o := breakerOpts()
			o.Active = activeOpts(f)
			f.set("b:1", true)
			f.set("c:1", true)
			r := startRig(t, o, balancer.Options{PanicThreshold: tc.threshold}, "a:1", "b:1", "c:1", "d:1")
			time.Sleep(2 * time.Second) // fall=3 failed probes
			synctest.Wait()
			r.results("d:1", gw, 4) // breaker open: never used, even in panic
			synctest.Wait()
			s := r.pool.Snapshot()
			if s.Tier != tc.wantTier || s.EligibleCount() != tc.wantSet {
				t.Fatalf("threshold %d: tier %s over %d backends, want %s over %d",
					tc.threshold, s.Tier, s.EligibleCount(), tc.wantTier, tc.wantSet)
			}
			if got := picks(r.pool, 300); got["d:1"] != 0 {
				t.Fatalf("breaker-open backend picked in panic: %v", got)
			}
		})
	}
}

func TestSlowStartAfterRecovery(t *testing.T) {
	for _, algo := range []balancer.Algorithm{balancer.RoundRobin, balancer.LeastConn, balancer.IPHash} {
		t.Run(algo.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeProbe()
				o := activeOpts(f)
				o.Rise = 1
				o.Fall = 1
				r := startRig(t, Options{Active: o}, balancer.Options{Algorithm: algo, SlowStart: 10 * time.Second}, "a:1", "b:1")
				synctest.Wait()
				a, b := r.b("a:1"), r.b("b:1")
				if w := r.pool.Snapshot().EffectiveWeight(b); w != 10 {
					t.Fatalf("at start: weight %d, want full (10): no slow start at boot", w)
				}
				f.set("b:1", true)
				time.Sleep(time.Second)
				synctest.Wait()
				f.set("b:1", false)
				time.Sleep(time.Second)
				synctest.Wait() // b recovered at t=2s
				var ws []int
				for range 11 {
					ws = append(ws, r.pool.Snapshot().EffectiveWeight(b))
					time.Sleep(time.Second)
					synctest.Wait()
				}
				if ws[0] < 1 || ws[0] > 2 || ws[10] != 10 {
					t.Fatalf("ramp %v: want from 10%% to full over 10s", ws)
				}
				for i := 1; i < len(ws); i++ {
					if ws[i] < ws[i-1] {
						t.Fatalf("ramp %v not monotonic", ws)
					}
				}
				if w := r.pool.Snapshot().EffectiveWeight(a); w != 10 {
					t.Fatalf("a's weight %d changed", w)
				}
				// The ramp shows in picks: early on b gets far less than half.
				f.set("b:1", true)
				time.Sleep(time.Second)
				synctest.Wait()
				f.set("b:1", false)
				time.Sleep(time.Second)
				synctest.Wait()
				got := picks(r.pool, 2000)
				if got["b:1"] > 400 || got["b:1"] == 0 {
					t.Fatalf("%s just after recovery: %v, want b:1 well under half but not 0", algo, got)
				}
			})
		})
	}
}

// design.md: backups take over before any panic-threshold rule applies. With
// 1 of 4 primaries eligible (25% < 50%) and a healthy backup, the pool stays
// on the eligible primary instead of spreading over the unhealthy ones.
func TestPanicDefersToBackups(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeProbe()
		for _, a := range []string{"b:1", "c:1", "d:1"} {
			f.set(a, true)
		}
		r := startRig(t, Options{Active: activeOpts(f)}, balancer.Options{PanicThreshold: 50},
			"a:1", "b:1", "c:1", "d:1", "x:1+")
		time.Sleep(2 * time.Second) // fall=3 failed probes
		synctest.Wait()
		got := picks(r.pool, 1000)
		if s := r.pool.Snapshot(); s.Tier != balancer.TierPrimary || got["a:1"] != 1000 {
			t.Fatalf("tier %s, picks %v: want primary tier, all on a:1", s.Tier, got)
		}
	})
}
