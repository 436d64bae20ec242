package balancer

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestSlowStartRamp: a backend joining a running pool starts at 10% of its
// weight and ramps linearly to full over SlowStart; members present at boot
// do not ramp; recovery ramps again.
func TestSlowStartRamp(t *testing.T) {
	clk := newClock()
	const window = 10 * time.Second
	ms := weighted(1, 3)
	p := newTestPool(t, Options{SlowStart: window, Now: clk.Now}, ms)
	a, b := backend(t, p, addr(0)), backend(t, p, addr(1))
	if w := p.Snapshot().EffectiveWeight(a); w != 10 {
		t.Fatalf("boot member weight %d, want 10 (no ramp at boot)", w)
	}

	grown := append(ms, Member{Address: addr(2), Weight: 1})
	p.SetMembers(SourceStatic, grown)
	c := backend(t, p, addr(2))
	steps := []struct {
		at   time.Duration
		want int
	}{{0, 1}, {window / 4, 2}, {window / 2, 5}, {window * 3 / 4, 7}, {window, 10}, {2 * window, 10}}
	var last time.Duration
	for _, s := range steps {
		clk.Advance(s.at - last)
		last = s.at
		p.SetMembers(SourceStatic, grown) // republish at the new time
		snap := p.Snapshot()
		if w := snap.EffectiveWeight(c); w != s.want {
			t.Errorf("at %v: weight %d, want %d", s.at, w, s.want)
		}
		if w := snap.EffectiveWeight(a); w != 10 {
			t.Errorf("at %v: steady member weight %d, want 10", s.at, w)
		}
	}

	// Recovery after an outage ramps again, from 10% of the weight.
	setHealth(p, b, false)
	if w := p.Snapshot().EffectiveWeight(b); w != 0 {
		t.Fatalf("unhealthy backend effective weight %d, want 0", w)
	}
	setHealth(p, b, true)
	if w := p.Snapshot().EffectiveWeight(b); w != 3 {
		t.Fatalf("recovered backend weight %d, want 3 (10%% of 30)", w)
	}
	clk.Advance(window / 2)
	p.SetMembers(SourceStatic, grown)
	if w := p.Snapshot().EffectiveWeight(b); w != 15 {
		t.Fatalf("recovered backend halfway weight %d, want 15", w)
	}

	// Disabled: a new backend is at full weight at once.
	q := newTestPool(t, Options{Now: clk.Now}, ms)
	q.SetMembers(SourceStatic, grown)
	if w := q.Snapshot().EffectiveWeight(backend(t, q, addr(2))); w != 10 {
		t.Fatalf("without slow start weight %d, want 10", w)
	}
}

// TestSlowStartShare: while it ramps, a newly joined backend gets a share
// of picks proportional to its effective weight under every algorithm.
func TestSlowStartShare(t *testing.T) {
	for _, algo := range algorithms {
		t.Run(algo.String(), func(t *testing.T) {
			clk := newClock()
			p := newTestPool(t, Options{Algorithm: algo, SlowStart: 30 * time.Second, Now: clk.Now}, equal(2))
			p.SetMembers(SourceStatic, equal(3))
			const n = 42_000
			want := map[string]float64{addr(0): 10, addr(1): 10, addr(2): 1}
			got := countPicks(p, n)
			if algo == RoundRobin && got[addr(2)] != n/21 {
				t.Errorf("new backend got %d of %d, want exactly %d", got[addr(2)], n, n/21)
			}
			checkShares(t, got, n, want, 0.01)

			clk.Advance(15 * time.Second)
			p.SetMembers(SourceStatic, equal(3))
			want[addr(2)] = 5
			checkShares(t, countPicks(p, n), n, want, 0.012)

			clk.Advance(15 * time.Second)
			p.SetMembers(SourceStatic, equal(3))
			want[addr(2)] = 10
			checkShares(t, countPicks(p, n), n, want, 0.012)
		})
	}
}

// TestSlowStartTimer: the pool republishes by itself as the ramp advances
// and stops its timer once every backend is at full weight.
func TestSlowStartTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newTestPool(t, Options{SlowStart: 2 * time.Second}, equal(2))
		p.SetMembers(SourceStatic, equal(3))
		c := backend(t, p, addr(2))
		if w := p.Snapshot().EffectiveWeight(c); w != 1 {
			t.Fatalf("joined at weight %d, want 1", w)
		}
		time.Sleep(time.Second + 50*time.Millisecond)
		synctest.Wait()
		if w := p.Snapshot().EffectiveWeight(c); w != 5 {
			t.Fatalf("after 1.05s of 2s weight %d, want 5", w)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if w := p.Snapshot().EffectiveWeight(c); w != 10 {
			t.Fatalf("after the window weight %d, want 10", w)
		}
		p.mu.Lock()
		armed := p.ramp != nil
		p.mu.Unlock()
		if armed {
			t.Fatal("ramp timer still armed with nothing ramping")
		}
	})
}

// TestCloseStopsRamp: Close stops the ramp timer; the pool stays readable.
func TestCloseStopsRamp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPool(Options{SlowStart: time.Second})
		p.SetMembers(SourceStatic, equal(2))
		p.SetMembers(SourceStatic, equal(3))
		snap := p.Snapshot()
		p.Close()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if p.Snapshot() != snap {
			t.Fatal("closed pool republished")
		}
		if p.Pick(0, nil) == nil {
			t.Fatal("closed pool no longer picks")
		}
	})
}
