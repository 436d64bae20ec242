package balancer

import (
	"testing"
	"time"
)

// serve picks n times from p, charging each pick the latency lat gives its
// backend (failed when lat says so), and returns the picks per address.
func serve(p *Pool, n int, lat func(*Backend) (time.Duration, bool)) map[string]int {
	got := map[string]int{}
	for range n {
		b := p.Pick(0, nil)
		got[b.Address()]++
		d, failed := lat(b)
		b.Observe(d, 200, failed)
	}
	return got
}

// TestLeastLatencySlowBackend: a backend 300 times slower than its peers
// gets almost none of the traffic (the bound: under 10%).
func TestLeastLatencySlowBackend(t *testing.T) {
	p := newTestPool(t, Options{Algorithm: LeastLatency}, equal(3))
	slow := backend(t, p, addr(2))
	got := serve(p, 3000, func(b *Backend) (time.Duration, bool) {
		if b == slow {
			return 300 * time.Millisecond, false
		}
		return time.Millisecond, false
	})
	if share := float64(got[slow.Address()]) / 3000; share >= 0.02 {
		t.Errorf("slow backend's share %.3f, want < 0.02 (picks %v)", share, got)
	}
}

// TestLeastLatencyErrorsPenalised: a backend that fails fast is charged
// the penalty, so it does not attract the traffic a latency-only cost
// would give it.
func TestLeastLatencyErrorsPenalised(t *testing.T) {
	p := newTestPool(t, Options{Algorithm: LeastLatency}, equal(3))
	bad := backend(t, p, addr(0))
	got := serve(p, 3000, func(b *Backend) (time.Duration, bool) {
		if b == bad {
			return 2 * time.Second, true // the proxy charges the response timeout
		}
		return 5 * time.Millisecond, false
	})
	if share := float64(got[bad.Address()]) / 3000; share >= 0.02 {
		t.Errorf("failing backend's share %.3f, want < 0.02 (picks %v)", share, got)
	}
}

// TestLeastLatencyInFlight: equal latencies, but one backend holds many
// requests in flight: the cost multiplies by in-flight + 1, so it is
// avoided.
func TestLeastLatencyInFlight(t *testing.T) {
	p := newTestPool(t, Options{Algorithm: LeastLatency}, equal(3))
	for _, b := range p.Snapshot().Members {
		b.Observe(10*time.Millisecond, 200, false)
	}
	busy := backend(t, p, addr(1))
	for range 20 {
		busy.Acquire()
	}
	got := countPicks(p, 3000)
	if got[busy.Address()] != 0 {
		t.Errorf("busy backend picked %d times, want 0 (picks %v)", got[busy.Address()], got)
	}
}

// TestLeastLatencyNewBackendAtMedian: a backend joining a pool with
// history is costed at the pool's median, so it neither takes every pick
// (as a zero average would make it) nor none.
func TestLeastLatencyNewBackendAtMedian(t *testing.T) {
	p := newTestPool(t, Options{Algorithm: LeastLatency}, equal(3))
	for i, d := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond} {
		backend(t, p, addr(i)).Observe(d, 200, false)
	}
	p.SetMembers(SourceStatic, equal(4))
	got := countPicks(p, 6000) // no new samples: costs stay put
	// Of the 6 candidate pairs the newcomer (2ms) wins only the one with
	// the 3ms backend; at zero it would win all 3 of its pairs (1/2).
	if share := float64(got[addr(3)]) / 6000; share < 0.10 || share > 0.25 {
		t.Errorf("new backend's share %.3f, want about 1/6 (picks %v)", share, got)
	}
}

// TestLeastLatencyForgetsOnReturn: a backend back in rotation starts over
// at the median rather than with the average that took it out.
func TestLeastLatencyForgetsOnReturn(t *testing.T) {
	p := newTestPool(t, Options{Algorithm: LeastLatency}, equal(3))
	b := backend(t, p, addr(0))
	b.Observe(time.Second, 200, false)
	mark(p, b, ReasonEjected, true)
	if b.LatencyEWMA() < 900*time.Millisecond {
		t.Fatalf("EWMA %s while out, want about 1s", b.LatencyEWMA())
	}
	mark(p, b, ReasonEjected, false)
	if e := b.LatencyEWMA(); e != 0 {
		t.Errorf("EWMA %s after rejoining, want 0 (costed at the median)", e)
	}
}

// TestPeakEWMA: a sample above the average replaces it; later lower
// samples pull it down with the weight of the time between them, and the
// average decays while no sample arrives.
func TestPeakEWMA(t *testing.T) {
	b := newBackend("10.0.0.1:80", State{})
	b.lat.tau.Store(int64(time.Second))
	b.Observe(10*time.Millisecond, 200, false)
	b.Observe(100*time.Millisecond, 200, false)
	if e := b.lat.ewma.Load(); e != int64(100*time.Millisecond) {
		t.Errorf("after a peak: %s, want 100ms", time.Duration(e))
	}
	b.Observe(time.Millisecond, 200, false) // almost no time passed: weight ~1
	if e := time.Duration(b.lat.ewma.Load()); e < 99*time.Millisecond {
		t.Errorf("a low sample right after the peak: %s, want still about 100ms", e)
	}
	b.lat.stamp.Add(-int64(10 * time.Second)) // ten time constants ago
	if e := time.Duration(decayed(b.lat.ewma.Load(), b.lat.stamp.Load(), monoNow(), float64(time.Second))); e > time.Millisecond {
		t.Errorf("decayed over 10 tau: %s, want < 1ms", e)
	}
	sum, n, errs := b.LatencyTotals()
	if n != 3 || errs != 0 || sum != 111*time.Millisecond {
		t.Errorf("totals %s/%d/%d, want 111ms over 3 answered, 0 errors", sum, n, errs)
	}
	b.Observe(time.Millisecond, 500, false)
	b.Observe(time.Second, 504, true)
	if _, n, errs := b.LatencyTotals(); n != 3 || errs != 2 {
		t.Errorf("after a 500 and a timeout: %d answered, %d errors; want 3 and 2", n, errs)
	}
}
