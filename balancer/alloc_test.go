//go:build !race

package balancer

import (
	"fmt"
	"testing"
)

// TestPickAllocs guards the hot path: Pick allocates nothing for any
// algorithm, pool size or tried list, and neither do Acquire, Release and
// Admit without a guard.
func TestPickAllocs(t *testing.T) {
	for _, algo := range algorithms {
		for _, n := range []int{1, 3, 12, 100} {
			for _, ws := range []string{"equal", "weighted"} {
				t.Run(fmt.Sprintf("%v/%d/%s", algo, n, ws), func(t *testing.T) {
					ms := equal(n)
					if ws == "weighted" {
						for i := range ms {
							ms[i].Weight = 1 + i%4
						}
					}
					p := newTestPool(t, Options{Algorithm: algo}, ms)
					snap := p.Snapshot()
					tried1 := []*Backend{snap.Members[0]}
					tried2 := []*Backend{snap.Members[0], snap.Members[n/2]}
					var key uint64
					for _, tc := range []struct {
						name  string
						tried []*Backend
					}{{"no tried", nil}, {"tried 1", tried1}, {"tried 2", tried2}} {
						allocs := testing.AllocsPerRun(2000, func() {
							key++
							p.Pick(key, tc.tried)
						})
						if allocs != 0 {
							t.Errorf("Pick with %s: %v allocs/op, want 0", tc.name, allocs)
						}
					}
				})
			}
		}
	}
}

func TestDataPathAllocs(t *testing.T) {
	p := newTestPool(t, Options{}, equal(3))
	b := backend(t, p, addr(0))
	allocs := testing.AllocsPerRun(2000, func() {
		if !b.Acquire() {
			panic("acquire failed")
		}
		done, err := b.Admit()
		if err != nil {
			panic(err)
		}
		done(ResultOK)
		b.Release(ResultOK)
	})
	if allocs != 0 {
		t.Errorf("Acquire+Admit+Release: %v allocs/op, want 0", allocs)
	}
}

// TestSetWeightSkipsMerge: an admin weight change touches one backend and
// rebuilds the snapshot; it does not rerun the membership merge, whose map
// of every listed member costs allocations in proportion to the pool.
func TestSetWeightSkipsMerge(t *testing.T) {
	const n = 300
	p := newTestPool(t, Options{Algorithm: LeastConn}, equal(n))
	w := 1
	allocs := testing.AllocsPerRun(50, func() {
		w = 3 - w // 1, 2, 1, ...
		if _, err := p.SetWeight(addr(7), w); err != nil {
			t.Fatal(err)
		}
	})
	if allocs >= n/2 {
		t.Errorf("SetWeight on a pool of %d: %v allocs, want a snapshot rebuild's few (a membership merge makes one per member)", n, allocs)
	}
	t.Logf("SetWeight on %d members: %v allocs", n, allocs)
}

// TestHashBoundedAllocs: the bounded-load hash pick (which sums the tier's
// in-flight counts and may walk past full backends) and its no-key
// fallbacks allocate nothing either.
func TestHashBoundedAllocs(t *testing.T) {
	for _, fallback := range []Algorithm{RoundRobin, LeastConn} {
		for _, n := range []int{3, 12, 300} {
			p := newTestPool(t, Options{Algorithm: Hash, HashBalanceFactor: 125, HashFallback: fallback}, equal(n))
			busy := p.Snapshot().Members[0]
			for range 5 {
				busy.Acquire() // a full backend to walk past
			}
			var key uint64
			allocs := testing.AllocsPerRun(2000, func() {
				key++
				p.Pick(key, nil)
				p.Pick(NoKey, nil)
			})
			if allocs != 0 {
				t.Errorf("%v fallback, %d backends: %v allocs/op, want 0", fallback, n, allocs)
			}
		}
	}
}
