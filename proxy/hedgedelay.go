package proxy

import (
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/metrics"
)

// Automatic hedge delay (retries.hedge.after: auto, Upstream.HedgeAuto):
// "The Tail at Scale" hedges at about the 95th percentile, so that about
// one request in twenty is sent twice. The delay is the p95 of the
// upstream's recent answered attempts (Stats.Answered: time to the response
// head, in the buckets of kelpie_request_duration_seconds), interpolated
// within its bucket as Prometheus' histogram_quantile does, and clamped to
// [MinAutoHedge, response timeout / 2]: never so short that every request
// is hedged, never so long that the hedge comes after the timeout. Whole
// requests (Stats.Latency) would not do: with one backend of three frozen,
// a third of them last the hedge delay itself, so their p95 is that delay
// and it never comes down.
//
// "Recent" is the requests since the last recomputation, which happens at
// most once per autoHedgeEvery and only once that window holds
// autoHedgeSamples requests; until the first such window, the delay is
// DefaultAutoHedge (clamped the same way). The request that finds the value
// due recomputes it: reading the histogram is a few atomic loads, so the
// pick/attempt path stays lock-free and allocation-free and needs no
// goroutine of its own.

const (
	// MinAutoHedge is the shortest automatic hedge delay.
	MinAutoHedge = 5 * time.Millisecond
	// DefaultAutoHedge is the automatic hedge delay before the upstream has
	// autoHedgeSamples requests to measure.
	DefaultAutoHedge = 100 * time.Millisecond
	// autoHedgeEvery is the shortest window the p95 is measured over.
	autoHedgeEvery = time.Second
	// autoHedgeSamples is the fewest requests a window needs: with fewer,
	// it grows until it has them.
	autoHedgeSamples = 20
)

// autoHedge is an upstream's automatic hedge delay.
type autoHedge struct {
	delay atomic.Int64 // nanoseconds; 0 until the first window is measured
	due   atomic.Int64 // unix nanoseconds of the next recomputation
	busy  atomic.Bool  // one recomputation at a time: it owns prev
	prev  [len(metrics.LatencyBuckets) + 1]uint64
}

// hedging reports whether up hedges at all.
func (up *Upstream) hedging() bool { return up.HedgeAuto || up.HedgeAfter > 0 }

// hedgeDelay is how long up's first attempt gets before a hedge: HedgeAfter,
// or with HedgeAuto the recent p95, recomputed when due.
func (up *Upstream) hedgeDelay(now time.Time) time.Duration {
	if !up.HedgeAuto {
		return up.HedgeAfter
	}
	h := &up.auto
	if now.UnixNano() >= h.due.Load() && h.busy.CompareAndSwap(false, true) {
		if d, ok := h.measure(&up.Stats.Answered); ok {
			h.delay.Store(int64(d))
		}
		h.due.Store(now.Add(autoHedgeEvery).UnixNano())
		h.busy.Store(false)
	}
	d := time.Duration(h.delay.Load())
	if d == 0 {
		d = DefaultAutoHedge
	}
	return clampHedge(d, up.settings().response)
}

// clampHedge bounds an automatic hedge delay to [MinAutoHedge, response/2].
func clampHedge(d, response time.Duration) time.Duration {
	return max(MinAutoHedge, min(d, response/2))
}

// measure returns the p95 of the requests lat observed since the last
// window that had autoHedgeSamples of them, and false while this one has
// fewer (it then stays open).
func (h *autoHedge) measure(lat *metrics.Histogram) (time.Duration, bool) {
	count, _, cum := lat.Read()
	var now [len(metrics.LatencyBuckets) + 1]uint64
	copy(now[:], cum[:])
	now[len(cum)] = count
	var total uint64
	if count >= h.prev[len(cum)] {
		total = count - h.prev[len(cum)]
	}
	if total < autoHedgeSamples {
		return 0, false
	}
	var win [len(now)]uint64 // cumulative counts of this window
	for i := range now {
		win[i] = now[i] - min(h.prev[i], now[i])
	}
	h.prev = now
	return quantile(0.95, win[:len(cum)], total), true
}

// quantile is histogram_quantile over cumulative bucket counts at
// metrics.LatencyBuckets' bounds, of total observations: linear within
// the bucket it falls in; above the last bound, that bound.
func quantile(q float64, cum []uint64, total uint64) time.Duration {
	rank := q * float64(total)
	lower, below := 0.0, uint64(0)
	for i, c := range cum {
		upper := metrics.LatencyBuckets[i]
		if float64(c) >= rank {
			in := c - below
			if in == 0 {
				return time.Duration(upper * 1e9)
			}
			s := lower + (upper-lower)*(rank-float64(below))/float64(in)
			return time.Duration(s * 1e9)
		}
		lower, below = upper, c
	}
	return time.Duration(lower * 1e9)
}
