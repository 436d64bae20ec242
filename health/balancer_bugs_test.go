//go:build balancer_bugs

// Behaviour of balancer.Pool that disagrees with design.md; reported to the
// lead, not fixed here (balancer is not ours). Run with
//
//	go test -tags balancer_bugs -run TestBug ./health/
package health

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// design.md: "backup members get traffic only when no primary is eligible
// (backups take over before any panic-threshold rule applies)". With 1 of 4
// primaries eligible (25% < panic_threshold 50) and a healthy backup, the
// pool enters TierPanic and spreads traffic over the three unhealthy
// primaries although a backup could serve: the panic rule applied first.
func TestBugPanicBeforeBackups(t *testing.T) {
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
		if s := r.pool.Snapshot(); s.Tier == balancer.TierPanic {
			t.Errorf("tier %s with an eligible backup; picks %v: unhealthy primaries get traffic", s.Tier, got)
		}
	})
}
