package proxy

import (
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/metrics"
)

// TestAutoHedgeDelay: with HedgeAuto the delay is DefaultAutoHedge until a
// window of answered attempts is measured, then their p95, recomputed per
// window (old samples do not count), clamped to [MinAutoHedge, response/2].
func TestAutoHedgeDelay(t *testing.T) {
	up := &Upstream{HedgeAuto: true, ResponseTimeout: 2 * time.Second, Stats: &metrics.UpstreamStats{}}
	now := time.Unix(1000, 0)
	observe := func(n int, d time.Duration) {
		for range n {
			up.Stats.Answered.Observe(d)
		}
	}
	if got := up.hedgeDelay(now); got != DefaultAutoHedge {
		t.Fatalf("no samples: delay %s, want DefaultAutoHedge %s", got, DefaultAutoHedge)
	}
	observe(autoHedgeSamples-1, 20*time.Millisecond)
	now = now.Add(autoHedgeEvery)
	if got := up.hedgeDelay(now); got != DefaultAutoHedge {
		t.Fatalf("%d samples: delay %s, want still %s", autoHedgeSamples-1, got, DefaultAutoHedge)
	}
	// 95 at 20ms and 5 at 3s: the p95 is in the 10-25ms bucket.
	observe(95-(autoHedgeSamples-1), 20*time.Millisecond)
	observe(5, 3*time.Second)
	now = now.Add(autoHedgeEvery)
	if got := up.hedgeDelay(now); got <= 10*time.Millisecond || got > 25*time.Millisecond {
		t.Fatalf("p95 of 20ms answers: delay %s, want in (10ms, 25ms]", got)
	}
	// Not yet due: new samples do not move it.
	observe(100, 400*time.Millisecond)
	before := up.hedgeDelay(now.Add(autoHedgeEvery / 2))
	if before > 25*time.Millisecond {
		t.Fatalf("recomputed before due: delay %s", before)
	}
	// The next window holds only the 400ms answers: p95 in 250-500ms.
	now = now.Add(autoHedgeEvery)
	if got := up.hedgeDelay(now); got <= 250*time.Millisecond || got > 500*time.Millisecond {
		t.Fatalf("window of 400ms answers: delay %s, want in (250ms, 500ms]", got)
	}
	// Very fast answers: clamped up to MinAutoHedge.
	observe(100, 100*time.Microsecond)
	now = now.Add(autoHedgeEvery)
	if got := up.hedgeDelay(now); got != MinAutoHedge {
		t.Fatalf("100µs answers: delay %s, want MinAutoHedge %s", got, MinAutoHedge)
	}
	// Answers slower than half the response timeout: clamped down to it.
	observe(100, 4*time.Second)
	now = now.Add(autoHedgeEvery)
	if got := up.hedgeDelay(now); got != time.Second {
		t.Fatalf("4s answers, response timeout 2s: delay %s, want 1s", got)
	}
	// A fixed delay is used as is.
	fixed := &Upstream{HedgeAfter: 70 * time.Millisecond, Stats: &metrics.UpstreamStats{}}
	if got := fixed.hedgeDelay(now); got != 70*time.Millisecond {
		t.Fatalf("fixed: delay %s, want 70ms", got)
	}
}

// TestAutoHedgeDelayFallbackClamped: the fallback obeys the clamp too.
func TestAutoHedgeDelayFallbackClamped(t *testing.T) {
	up := &Upstream{HedgeAuto: true, ResponseTimeout: 120 * time.Millisecond, Stats: &metrics.UpstreamStats{}}
	if got := up.hedgeDelay(time.Now()); got != 60*time.Millisecond {
		t.Fatalf("delay %s, want response timeout / 2 = 60ms", got)
	}
}

// TestAutoHedgeDelayAllocs: computing the delay, recomputation included,
// allocates nothing.
func TestAutoHedgeDelayAllocs(t *testing.T) {
	up := &Upstream{HedgeAuto: true, Stats: &metrics.UpstreamStats{}}
	now := time.Unix(1000, 0)
	allocs := testing.AllocsPerRun(200, func() {
		for range autoHedgeSamples {
			up.Stats.Answered.Observe(3 * time.Millisecond)
		}
		now = now.Add(autoHedgeEvery)
		_ = up.hedgeDelay(now)
	})
	if allocs != 0 {
		t.Fatalf("hedgeDelay allocates %.1f times per call", allocs)
	}
}
