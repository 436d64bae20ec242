package balancer

import (
	"math/rand/v2"
	"slices"
	"time"
)

// leastLatency is power of two choices over peak-EWMA latency (Finagle's
// p2cPeakEwma, Linkerd's balancer): two weight-proportional random
// candidates, the one with the lower cost wins, where cost is the peak-EWMA
// of its response latency times (in-flight + 1). Weights enter through the
// sampling alone (as in Envoy's weighted least_request): on a tie, such as
// an idle pool, the first candidate wins, so traffic follows the weights. A
// backend without a sample yet (new, or back in rotation) is costed at the
// tier's median EWMA when the snapshot was built, so it neither floods
// (EWMA zero) nor starves. Errors enter the EWMA as penalty latencies (see
// Backend.Observe).
type leastLatency struct {
	cum  []uint64 // prefix sums of weights, for weighted candidate sampling
	seed float64  // median EWMA of the tier at build time, ns; cost of a backend without samples
	tau  float64  // decay time constant, ns
}

var _ selector = (*leastLatency)(nil)

func newLeastLatency(t *tier, decay time.Duration) *leastLatency {
	if decay <= 0 {
		decay = DefaultEWMADecay
	}
	ll := &leastLatency{cum: make([]uint64, len(t.weights)), tau: float64(decay)}
	var s uint64
	for i, w := range t.weights {
		s += uint64(w)
		ll.cum[i] = s
	}
	now := monoNow()
	var seen []float64
	for _, b := range t.set {
		if e := decayed(b.lat.ewma.Load(), b.lat.stamp.Load(), now, ll.tau); e > 0 {
			seen = append(seen, e)
		}
	}
	if len(seen) > 0 {
		slices.Sort(seen)
		ll.seed = seen[len(seen)/2]
	}
	return ll
}

// cost is backend i's load score; lower is better.
func (ll *leastLatency) cost(t *tier, i int, now int64) float64 {
	b := t.set[i]
	e := decayed(b.lat.ewma.Load(), b.lat.stamp.Load(), now, ll.tau)
	if e == 0 {
		e = ll.seed
	}
	// +1ns so that zero EWMAs (no samples anywhere yet) still rank by load.
	return (e + 1) * float64(b.InFlight()+1)
}

func (ll *leastLatency) pick(t *tier, _ uint64, tried []*Backend) *Backend {
	n := len(t.set)
	if n == 1 {
		if contains(tried, t.set[0]) {
			return nil
		}
		return t.set[0]
	}
	total := ll.cum[n-1]
	now := monoNow()
	for range 4 {
		i := sampleCum(ll.cum, rand.Uint64N(total))
		j := sampleCum(ll.cum, rand.Uint64N(total))
		for k := 0; j == i && k < 3; k++ { // two distinct candidates where possible
			j = sampleCum(ll.cum, rand.Uint64N(total))
		}
		if j == i {
			j = (i + 1) % n
		}
		ti, tj := contains(tried, t.set[i]), contains(tried, t.set[j])
		switch {
		case ti && tj:
			continue
		case ti:
			return t.set[j]
		case tj:
			return t.set[i]
		}
		if ll.cost(t, j, now) < ll.cost(t, i, now) {
			i = j
		}
		return t.set[i]
	}
	// Most candidates were tried already: the cheapest untried one.
	best, bestCost := -1, 0.0
	for i, b := range t.set {
		if contains(tried, b) {
			continue
		}
		if c := ll.cost(t, i, now); best < 0 || c < bestCost {
			best, bestCost = i, c
		}
	}
	if best < 0 {
		return nil
	}
	return t.set[best]
}

// sampleCum returns the index whose range of prefix sums cum holds r
// (0 <= r < cum[len-1]).
func sampleCum(cum []uint64, r uint64) int {
	lo, hi := 0, len(cum)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if cum[mid] > r {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}
