package balancer

import "testing"

// TestManualFailback: under manual failback a primary that recovers from a
// health exit waits as awaiting_ready, traffic staying on the backups,
// until an operator readies it; under auto it returns at once. A drain and
// ready cycle is no health exit and needs no second ready.
func TestManualFailback(t *testing.T) {
	for _, policy := range []Failback{FailbackAuto, FailbackManual} {
		t.Run(policy.String(), func(t *testing.T) {
			p := newTestPool(t, Options{Failback: policy}, []Member{{Address: addr(0)}, {Address: addr(1), Backup: true}})
			b := backend(t, p, addr(0))
			setHealth(p, b, true)
			setHealth(p, b, false)
			if p.Snapshot().Tier != TierBackup {
				t.Fatalf("tier %v with the primary unhealthy", p.Snapshot().Tier)
			}
			setHealth(p, b, true)
			if policy == FailbackAuto {
				if p.Snapshot().Tier != TierPrimary || b.Admin() != AdminReady {
					t.Fatalf("auto: tier %v admin %v, want primary ready", p.Snapshot().Tier, b.Admin())
				}
				return
			}
			if p.Snapshot().Tier != TierBackup || b.Admin() != AdminAwaitingReady || b.Down() != ReasonAwaitingReady {
				t.Fatalf("manual: tier %v admin %v down %v, want backup, awaiting_ready", p.Snapshot().Tier, b.Admin(), b.Down())
			}
			if got := countPicks(p, 100); got[addr(0)] != 0 {
				t.Fatalf("awaiting backend picked: %v", got)
			}
			if _, err := p.Undrain(addr(0)); err != nil {
				t.Fatal(err)
			}
			if p.Snapshot().Tier != TierPrimary || b.Admin() != AdminReady || b.Down() != 0 {
				t.Fatalf("after ready: tier %v admin %v down %v", p.Snapshot().Tier, b.Admin(), b.Down())
			}
			p.Drain(addr(0))
			p.Undrain(addr(0))
			if b.Down() != 0 {
				t.Fatalf("a drain cycle left %v", b.Down())
			}
		})
	}
}

// TestAwaitingReadyNotInPanic: panic mode spreads over unhealthy primaries
// but never over one awaiting an operator's ready.
func TestAwaitingReadyNotInPanic(t *testing.T) {
	p := newTestPool(t, Options{Failback: FailbackManual, PanicThreshold: 90}, equal(3))
	b0, b1 := backend(t, p, addr(0)), backend(t, p, addr(1))
	setHealth(p, b0, false)
	setHealth(p, b0, true) // awaiting_ready
	setHealth(p, b1, false)
	got := countPicks(p, 300)
	if p.Snapshot().Tier != TierPanic || got[addr(0)] != 0 || got[addr(1)] == 0 {
		t.Fatalf("tier %v picks %v: want panic over %s and %s only", p.Snapshot().Tier, got, addr(1), addr(2))
	}
}
