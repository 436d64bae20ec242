package balancer

import "sync/atomic"

// roundRobin is nginx's smooth weighted round robin, precomputed: at
// snapshot build the whole cycle of picks (length sum(w)/gcd(w)) is laid out
// once, so picking is one atomic increment and an index. Weights 3:1:1 give
// A B A C A, interleaved rather than A A A B C. The cursor is the pool's and
// survives rebuilds, so a health flip does not restart the cycle at the
// first backend.
type roundRobin struct {
	cursor *atomic.Uint64
	sched  []uint32 // indices into the tier's set; nil when all weights are equal
}

var _ selector = (*roundRobin)(nil)

// maxSchedule bounds the precomputed cycle; heavier weight sets are scaled
// down (keeping each weight at least 1) to fit. Building costs cycle length
// times pool size under the pool's writer lock, so the bound keeps a rebuild
// of a 300-backend pool with wildly mixed weights to a few milliseconds.
const maxSchedule = 1 << 13

func newRoundRobin(t *tier, cursor *atomic.Uint64) *roundRobin {
	rr := &roundRobin{cursor: cursor}
	if len(t.set) < 2 {
		return rr
	}
	w := append([]uint32(nil), t.weights...)
	g := w[0]
	for _, x := range w[1:] {
		g = gcd(g, x)
	}
	var total uint64
	for i := range w {
		w[i] /= g
		total += uint64(w[i])
	}
	if total == uint64(len(w)) {
		return rr // all equal: plain rotation
	}
	if total > maxSchedule {
		scale := float64(maxSchedule) / float64(total)
		total = 0
		for i := range w {
			w[i] = max(uint32(float64(w[i])*scale), 1)
			total += uint64(w[i])
		}
	}
	rr.sched = make([]uint32, 0, total)
	cur := make([]int64, len(w))
	for range total {
		best := 0
		for i := range w {
			cur[i] += int64(w[i])
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= int64(total)
		rr.sched = append(rr.sched, uint32(best))
	}
	return rr
}

func (rr *roundRobin) pick(t *tier, _ uint64, tried []*Backend) *Backend {
	for range len(t.set) {
		i := rr.cursor.Add(1) - 1
		var b *Backend
		if rr.sched == nil {
			b = t.set[i%uint64(len(t.set))]
		} else {
			b = t.set[rr.sched[i%uint64(len(rr.sched))]]
		}
		if len(tried) == 0 || !contains(tried, b) {
			return b
		}
	}
	return firstUntried(t, tried)
}
