package balancer

import "math/rand/v2"

// leastConn sends a request to the backend with the fewest in-flight
// requests per unit of weight. Small pools are scanned in full; ties (most
// often: everyone idle) are broken by weighted reservoir sampling, so at low
// load traffic still follows the weights. Pools larger than scanLimit use
// power of two choices (Mitzenmacher; Envoy's default least_request): two
// weight-proportional random candidates, the less loaded wins, which is
// nearly as good as a full scan in O(1) and avoids herding onto one
// momentarily idle backend.
type leastConn struct {
	cum []uint64 // prefix sums of weights, for weighted candidate sampling
}

var _ selector = (*leastConn)(nil)

const scanLimit = 8

func newLeastConn(t *tier) *leastConn {
	lc := &leastConn{}
	if len(t.set) > scanLimit {
		lc.cum = make([]uint64, len(t.weights))
		var s uint64
		for i, w := range t.weights {
			s += uint64(w)
			lc.cum[i] = s
		}
	}
	return lc
}

// less reports whether backend i carries less load per weight than j:
// inflight_i/w_i < inflight_j/w_j, cross-multiplied to stay in integers.
func less(t *tier, i, j int) bool {
	return t.set[i].InFlight()*int64(t.weights[j]) < t.set[j].InFlight()*int64(t.weights[i])
}

func (lc *leastConn) pick(t *tier, _ uint64, tried []*Backend) *Backend {
	if lc.cum != nil {
		total := lc.cum[len(lc.cum)-1]
		for range 4 {
			i, j := lc.sample(rand.Uint64N(total)), lc.sample(rand.Uint64N(total))
			if contains(tried, t.set[i]) {
				i = j
			}
			if contains(tried, t.set[j]) {
				j = i
			}
			if contains(tried, t.set[i]) {
				continue
			}
			if less(t, j, i) {
				i = j
			}
			return t.set[i]
		}
	}
	best := -1
	var tieWeight uint64
	for i, b := range t.set {
		if len(tried) > 0 && contains(tried, b) {
			continue
		}
		switch {
		case best < 0 || less(t, i, best):
			best, tieWeight = i, uint64(t.weights[i])
		case !less(t, best, i): // a tie: keep each with probability w/sum(w)
			tieWeight += uint64(t.weights[i])
			if rand.Uint64N(tieWeight) < uint64(t.weights[i]) {
				best = i
			}
		}
	}
	if best < 0 {
		return nil
	}
	return t.set[best]
}

// sample returns the index whose weight range holds r (0 <= r < total).
func (lc *leastConn) sample(r uint64) int { return sampleCum(lc.cum, r) }
