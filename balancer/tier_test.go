package balancer

import (
	"fmt"
	"testing"
)

// TestBackups: backups get nothing while any primary is eligible, every
// pick when none is, and nothing again once a primary recovers (failback).
func TestBackups(t *testing.T) {
	for _, algo := range algorithms {
		t.Run(algo.String(), func(t *testing.T) {
			ms := []Member{
				{Address: addr(0)}, {Address: addr(1)},
				{Address: addr(2), Backup: true}, {Address: addr(3), Backup: true, Weight: 3},
			}
			p := newTestPool(t, Options{Algorithm: algo, PanicThreshold: 50}, ms)
			p0, p1 := backend(t, p, addr(0)), backend(t, p, addr(1))
			const n = 4000

			got := countPicks(p, n)
			if got[addr(2)]+got[addr(3)] != 0 || p.Snapshot().Tier != TierPrimary {
				t.Fatalf("backups picked with primaries up: %v (tier %v)", got, p.Snapshot().Tier)
			}

			// One primary left, below the panic threshold's share: still no
			// backup (backups come in only when no primary is eligible).
			setHealth(p, p0, false)
			got = countPicks(p, n)
			if got[addr(2)]+got[addr(3)] != 0 {
				t.Fatalf("backups picked with one primary up: %v", got)
			}

			mark(p, p1, ReasonEjected, true)
			if tier := p.Snapshot().Tier; tier != TierBackup {
				t.Fatalf("tier %v with every primary down, want backup", tier)
			}
			got = countPicks(p, n)
			if got[addr(0)]+got[addr(1)] != 0 || got[""] != 0 {
				t.Fatalf("with every primary down: %v, want backups only", got)
			}
			if algo != IPHash { // ip_hash's split is per client, not per pick
				checkShares(t, got, n, map[string]float64{addr(2): 1, addr(3): 3}, 0.03)
			}

			mark(p, p1, ReasonEjected, false) // failback
			got = countPicks(p, n)
			if got[addr(1)] != n {
				t.Fatalf("after failback: %v, want all on %s", got, addr(1))
			}

			// Backups that are down themselves leave the pool with nothing.
			setHealth(p, p1, false)
			setHealth(p, backend(t, p, addr(2)), false)
			mark(p, backend(t, p, addr(3)), ReasonBreakerOpen, true)
			if b := p.Pick(1, nil); b != nil || p.Snapshot().Tier != TierNone {
				t.Fatalf("picked %v (tier %v), want nil with nothing eligible", b.Address(), p.Snapshot().Tier)
			}
		})
	}
}

// TestPanicThreshold: when the eligible share of non-drained primaries
// falls below the threshold and no backup is eligible, traffic spreads over
// every non-drained primary whose breaker is not open (and not critical in
// discovery); 0 disables panic mode. An eligible backup keeps the pool out
// of panic (design.md: backups take over before any panic-threshold rule),
// yet serves only when no primary is eligible.
func TestPanicThreshold(t *testing.T) {
	// Ten primaries, addr(0) drained, addr(1) breaker open, addr(2)
	// critical in discovery, some of addr(3..9) failing probes; and a
	// backup that is absent, eligible or down.
	const backupAddr = "10.0.9.000:80"
	tests := []struct {
		name      string
		threshold int
		unhealthy int    // of addr(3..9), how many fail active probes
		backup    string // "", "up" or "down"
		wantTier  Tier
		wantSet   int
	}{
		{"disabled", 0, 6, "", TierPrimary, 1},
		{"above threshold", 50, 2, "", TierPrimary, 5},
		{"5 of 9 is not below 55%", 55, 2, "", TierPrimary, 5},
		{"5 of 9 is below 56%", 56, 2, "", TierPanic, 7},
		{"below threshold", 50, 3, "", TierPanic, 7},
		{"one eligible left", 50, 6, "", TierPanic, 7},
		{"threshold 100 with any down", 100, 1, "", TierPanic, 7},
		{"none eligible, no backup", 50, 7, "", TierNone, 0},
		{"below threshold, backup down", 50, 6, "down", TierPanic, 7},
		{"below threshold, backup up: no panic", 50, 6, "up", TierPrimary, 1},
		{"none eligible, backup up", 50, 7, "up", TierBackup, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := equal(10)
			if tt.backup != "" {
				ms = append(ms, Member{Address: backupAddr, Backup: true})
			}
			p := newTestPool(t, Options{PanicThreshold: tt.threshold}, ms)
			if tt.backup == "down" {
				setHealth(p, backend(t, p, backupAddr), false)
			}
			p.Drain(addr(0))
			mark(p, backend(t, p, addr(1)), ReasonBreakerOpen, true)
			mark(p, backend(t, p, addr(2)), ReasonCritical, true)
			for i := range tt.unhealthy {
				setHealth(p, backend(t, p, addr(3+i)), false)
			}
			// 9 non-drained primaries; 7-unhealthy eligible.
			s := p.Snapshot()
			if s.Tier != tt.wantTier || s.EligibleCount() != tt.wantSet {
				t.Fatalf("tier %v over %d, want %v over %d", s.Tier, s.EligibleCount(), tt.wantTier, tt.wantSet)
			}
			got := countPicks(p, 7000)
			for _, never := range []int{0, 1, 2} {
				if got[addr(never)] != 0 {
					t.Errorf("%s picked %d times (drained, breaker open or critical)", addr(never), got[addr(never)])
				}
			}
			if tt.wantTier == TierPanic {
				for i := 3; i < 10; i++ {
					if got[addr(i)] != 1000 {
						t.Errorf("panic: %s got %d of 7000, want 1000", addr(i), got[addr(i)])
					}
					if !s.Eligible(i) {
						t.Errorf("panic: %s not reported eligible", addr(i))
					}
				}
			}
			if tt.wantTier == TierPrimary && got[backupAddr] != 0 {
				t.Errorf("backup got %d picks with a primary eligible", got[backupAddr])
			}
			for i, b := range s.Members {
				if s.Eligible(i) != (got[b.Address()] > 0) {
					t.Errorf("%s: Eligible=%v but got %d picks", b.Address(), s.Eligible(i), got[b.Address()])
				}
			}
		})
	}
}

func TestEmptyPool(t *testing.T) {
	for _, algo := range algorithms {
		p := NewPool(Options{Algorithm: algo})
		if b := p.Pick(42, nil); b != nil {
			t.Errorf("%v: empty new pool picked %s", algo, b.Address())
		}
		p.SetMembers(SourceStatic, equal(3))
		p.SetMembers(SourceStatic, nil)
		if b := p.Pick(42, nil); b != nil {
			t.Errorf("%v: emptied pool picked %s", algo, b.Address())
		}
		s := p.Snapshot()
		if s.Tier != TierNone || s.EligibleCount() != 0 || len(s.Members) != 0 {
			t.Errorf("%v: emptied snapshot tier %v count %d members %d", algo, s.Tier, s.EligibleCount(), len(s.Members))
		}
		p.Close()
	}
}

func TestSingleBackend(t *testing.T) {
	for _, algo := range algorithms {
		p := newTestPool(t, Options{Algorithm: algo}, weighted(5))
		for i := range 100 {
			if b := p.Pick(uint64(i), nil); b == nil || b.Address() != addr(0) {
				t.Fatalf("%v: pick %d = %v", algo, i, b)
			}
		}
		b := backend(t, p, addr(0))
		if got := p.Pick(1, []*Backend{b}); got != nil {
			t.Errorf("%v: retry after the only backend picked %s", algo, got.Address())
		}
	}
}

// TestTriedExclusion: a retry never gets a backend it already tried, every
// algorithm walks the whole tier before giving up, and nil comes when all
// were tried.
func TestTriedExclusion(t *testing.T) {
	for _, algo := range algorithms {
		for _, ws := range [][]int{{1, 1, 1}, {3, 1, 1}, {100, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5}} {
			t.Run(fmt.Sprintf("%v/%v", algo, ws), func(t *testing.T) {
				p := newTestPool(t, Options{Algorithm: algo}, weighted(ws...))
				for k := range 200 {
					var tried []*Backend
					for range ws {
						b := p.Pick(clientKey(k), tried)
						if b == nil {
							t.Fatalf("nil after %d of %d tried", len(tried), len(ws))
						}
						if contains(tried, b) {
							t.Fatalf("retry got %s again (tried %d)", b.Address(), len(tried))
						}
						tried = append(tried, b)
					}
					if b := p.Pick(clientKey(k), tried); b != nil {
						t.Fatalf("all %d tried, still picked %s", len(tried), b.Address())
					}
				}
			})
		}
	}
}

// TestIPHashRetryIsStable: a client's retry goes to its second choice,
// the same one each time.
func TestIPHashRetryIsStable(t *testing.T) {
	p := newTestPool(t, Options{Algorithm: IPHash}, equal(5))
	for k := range 100 {
		first := p.Pick(clientKey(k), nil)
		second := p.Pick(clientKey(k), []*Backend{first})
		for range 3 {
			if again := p.Pick(clientKey(k), []*Backend{first}); again != second {
				t.Fatalf("client %d: retry went to %s then %s", k, second.Address(), again.Address())
			}
		}
	}
}
