package balancer

import (
	"fmt"
	"testing"
)

// TestLeastConnIdleFollowsWeights: with nothing in flight every backend
// ties, and the weighted tie-break (full scan for small pools, weighted
// candidates for power of two choices in large ones) follows the weights.
func TestLeastConnIdleFollowsWeights(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
	}{
		{"scan equal", []int{1, 1, 1}},
		{"scan 3:1:1", []int{3, 1, 1}},
		{"scan 5:3:1:1", []int{5, 3, 1, 1}},
		{"p2c equal 12", []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"p2c weighted 12", []int{6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPool(t, Options{Algorithm: LeastConn}, weighted(tt.weights...))
			want := map[string]float64{}
			for i, w := range tt.weights {
				want[addr(i)] = float64(w)
			}
			const n = 60_000
			checkShares(t, countPicks(p, n), n, want, 0.01)
		})
	}
}

// TestLeastConnUnderLoad: requests that stay in flight spread so that
// in-flight per unit of weight evens out.
func TestLeastConnUnderLoad(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		slack   float64 // allowed spread of inflight/weight, in requests per weight
	}{
		{"scan 3:1:1", []int{3, 1, 1}, 1},
		{"scan equal 8", []int{1, 1, 1, 1, 1, 1, 1, 1}, 1},
		{"p2c 3:1 x6", []int{3, 1, 3, 1, 3, 1, 3, 1, 3, 1, 3, 1}, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPool(t, Options{Algorithm: LeastConn}, weighted(tt.weights...))
			total := 0
			for _, w := range tt.weights {
				total += w
			}
			n := 100 * total
			for range n {
				b := p.Pick(0, nil)
				if !b.Acquire() {
					t.Fatalf("acquire %s failed", b.Address())
				}
			}
			lo, hi := 1e18, 0.0
			for i, w := range tt.weights {
				r := float64(backend(t, p, addr(i)).InFlight()) / float64(w)
				lo, hi = min(lo, r), max(hi, r)
			}
			// 100 per weight is the even spread.
			if hi-lo > tt.slack || lo > 100 || hi < 100 {
				t.Errorf("in flight per weight ranges %.2f..%.2f, want within %.0f of 100", lo, hi, tt.slack)
			}
		})
	}
}

// TestLeastConnPrefersIdle: a loaded backend is skipped while an idle one
// exists, whatever the weights; releasing load brings it back.
func TestLeastConnPrefersIdle(t *testing.T) {
	for _, n := range []int{3, 12} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ms := equal(n)
			ms[0].Weight = 10 // heavy, but busy
			p := newTestPool(t, Options{Algorithm: LeastConn}, ms)
			for i := range n - 1 {
				b := backend(t, p, addr(i))
				for range 5 {
					b.Acquire()
				}
			}
			idle := addr(n - 1)
			for range 200 {
				if b := p.Pick(0, nil); b.Address() != idle && n <= scanLimit {
					t.Fatalf("picked busy %s, want idle %s", b.Address(), idle)
				}
			}
			if n > scanLimit {
				// Power of two choices only guarantees the less loaded of
				// two samples: the idle one wins whenever sampled.
				got := countPicks(p, 20_000)[idle]
				if got < 20_000*2/(n+9)/2 {
					t.Errorf("idle backend got %d of 20000 picks", got)
				}
			}
		})
	}
}
