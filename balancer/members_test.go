package balancer

import (
	"errors"
	"sync"
	"testing"
)

// TestDrain: after Drain returns, no algorithm picks the backend and a
// stale pointer's Acquire fails; admin goes draining -> drained as
// in-flight requests finish; Undrain brings it back.
func TestDrain(t *testing.T) {
	for _, algo := range algorithms {
		t.Run(algo.String(), func(t *testing.T) {
			p := newTestPool(t, Options{Algorithm: algo}, equal(3))
			b := backend(t, p, addr(1))
			if !b.Acquire() || !b.Acquire() {
				t.Fatal("acquire on a ready backend failed")
			}
			if got, err := p.Drain(addr(1)); err != nil || got != b {
				t.Fatalf("Drain = %v, %v", got, err)
			}
			if _, err := p.Drain(addr(1)); err != nil { // idempotent
				t.Fatalf("second Drain: %v", err)
			}
			if b.Acquire() {
				t.Fatal("Acquire succeeded after Drain")
			}
			if got := countPicks(p, 3000)[addr(1)]; got != 0 {
				t.Fatalf("drained backend picked %d times", got)
			}
			if s := b.Admin(); s != AdminDraining {
				t.Fatalf("admin %v with 2 in flight, want draining", s)
			}
			b.Release(ResultOK)
			if s := b.Admin(); s != AdminDraining {
				t.Fatalf("admin %v with 1 in flight, want draining", s)
			}
			b.Release(ResultOK)
			if s := b.Admin(); s != AdminDrained {
				t.Fatalf("admin %v when idle, want drained", s)
			}
			if b.Requests() != 2 || b.InFlight() != 0 {
				t.Fatalf("requests %d in flight %d, want 2 and 0", b.Requests(), b.InFlight())
			}
			if d := p.Drained(); len(d) != 1 || d[0] != addr(1) {
				t.Fatalf("Drained() = %v", d)
			}
			if _, err := p.Undrain(addr(1)); err != nil {
				t.Fatal(err)
			}
			if b.Admin() != AdminReady || !b.Acquire() {
				t.Fatal("not ready after Undrain")
			}
			b.Release(ResultLocal)
			if got := countPicks(p, 3000)[addr(1)]; got == 0 {
				t.Fatal("undrained backend never picked")
			}
			if _, err := p.Drain("10.9.9.9:80"); !errors.Is(err, ErrUnknownBackend) {
				t.Fatalf("Drain(unknown) = %v, want ErrUnknownBackend", err)
			}
		})
	}
}

// TestSetMembersKeepsBackends: a backend listed before and after a refresh
// is the same *Backend with its counters; one that leaves is marked
// removed and refuses new requests while its in-flight ones finish; a
// drain survives the backend leaving and returning.
func TestSetMembersKeepsBackends(t *testing.T) {
	p := newTestPool(t, Options{}, equal(3))
	b0, b1, b2 := backend(t, p, addr(0)), backend(t, p, addr(1)), backend(t, p, addr(2))
	b0.Acquire()
	b0.Release(ResultOK)
	b1.Acquire() // in flight across its removal
	p.Drain(addr(2))
	changed := p.Changed()

	p.SetMembers(SourceStatic, weighted(4, 1, 1)) // weights change only
	select {
	case <-changed:
		t.Fatal("Changed closed by a weight-only refresh")
	default:
	}
	if backend(t, p, addr(0)) != b0 || b0.Requests() != 1 || b0.Weight() != 4 {
		t.Fatalf("refresh replaced or reset %s (requests %d, weight %d)", addr(0), b0.Requests(), b0.Weight())
	}

	p.SetMembers(SourceStatic, []Member{{Address: addr(0)}}) // 1 and 2 leave
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed when backends left")
	}
	if p.Lookup(addr(1)) != nil || b1.Down()&ReasonRemoved == 0 {
		t.Fatalf("removed backend still listed or not marked (down %v)", b1.Down())
	}
	if b1.Acquire() {
		t.Fatal("Acquire on a removed backend succeeded")
	}
	if b1.InFlight() != 1 {
		t.Fatalf("removed backend in flight %d, want its 1 request still counted", b1.InFlight())
	}
	b1.Release(ResultOK)
	for _, algo := range algorithms {
		p.Reconfigure(Options{Algorithm: algo})
		if got := countPicks(p, 100); got[addr(0)] != 100 {
			t.Fatalf("%v after removal: %v", algo, got)
		}
	}

	p.SetMembers(SourceStatic, equal(3)) // both return as new backends
	nb1, nb2 := backend(t, p, addr(1)), backend(t, p, addr(2))
	if nb1 == b1 || nb1.Down() != 0 || nb1.Requests() != 0 {
		t.Fatalf("returning backend reused the removed one or kept its state (down %v)", nb1.Down())
	}
	if nb2.Down()&ReasonDrain == 0 || nb2.Admin() != AdminDrained || nb2.Acquire() {
		t.Fatalf("drain lost across remove and re-add: down %v admin %v", nb2.Down(), nb2.Admin())
	}
	if got := countPicks(p, 300)[addr(2)]; got != 0 {
		t.Fatalf("re-added drained backend picked %d times", got)
	}
	if b2.Down()&ReasonRemoved == 0 {
		t.Fatal("old drained backend not marked removed")
	}
}

// TestSources: a backend listed by two sources stays while either lists
// it, and the static list's weight and backup flag win.
func TestSources(t *testing.T) {
	p := newTestPool(t, Options{}, []Member{{Address: addr(0), Weight: 2}})
	p.SetMembers(SourceConsul, []Member{{Address: addr(0), Weight: 9, Backup: true}, {Address: addr(1)}})
	b0 := backend(t, p, addr(0))
	if b0.Sources() != SourceStatic|SourceConsul || b0.Weight() != 2 || b0.Backup() {
		t.Fatalf("sources %v weight %d backup %v, want static+consul, 2, false", b0.Sources(), b0.Weight(), b0.Backup())
	}
	p.SetMembers(SourceStatic, nil)
	if backend(t, p, addr(0)) != b0 || b0.Weight() != 9 || !b0.Backup() || b0.Sources() != SourceConsul {
		t.Fatalf("after static drops it: weight %d backup %v sources %v", b0.Weight(), b0.Backup(), b0.Sources())
	}
	p.SetMembers(SourceConsul, nil)
	if len(p.Snapshot().Members) != 0 || b0.Down()&ReasonRemoved == 0 {
		t.Fatal("backend stayed with no source listing it")
	}
}

// TestSetWeight: an override applies at once, survives refreshes that
// bring another weight, and weight 0 restores the source's weight.
func TestSetWeight(t *testing.T) {
	p := newTestPool(t, Options{}, equal(3))
	b, err := p.SetWeight(addr(0), 3)
	if err != nil || b.Weight() != 3 {
		t.Fatalf("SetWeight = %v, %v", b, err)
	}
	if got := letters(p, 10); got != "abacaabaca" {
		t.Fatalf("after override picks %q, want 3:1:1", got)
	}
	p.SetMembers(SourceStatic, weighted(7, 1, 1))
	if b.Weight() != 3 {
		t.Fatalf("refresh replaced the override: weight %d", b.Weight())
	}
	if _, err := p.SetWeight(addr(0), 0); err != nil || b.Weight() != 7 {
		t.Fatalf("clearing override: weight %d, %v; want the source's 7", b.Weight(), err)
	}
	for _, bad := range []int{-1, MaxWeight + 1} {
		if _, err := p.SetWeight(addr(0), bad); err == nil {
			t.Errorf("SetWeight(%d) accepted", bad)
		}
	}
	if _, err := p.SetWeight("10.9.9.9:80", 2); !errors.Is(err, ErrUnknownBackend) {
		t.Errorf("SetWeight(unknown) = %v", err)
	}
}

// TestSourceWeightClamped: a source weight beyond MaxWeight (Consul's
// Weights.Passing is any int) is clamped, never wrapped into a zero or
// negative weight that breaks the pickers.
func TestSourceWeightClamped(t *testing.T) {
	for _, algo := range algorithms {
		p := newTestPool(t, Options{Algorithm: algo}, []Member{
			{Address: addr(0), Weight: 1 << 31}, {Address: addr(1), Weight: 1 << 31}, {Address: addr(2), Weight: 500_000_000},
		})
		for i := range 3 {
			if w := backend(t, p, addr(i)).Weight(); w != MaxWeight {
				t.Errorf("%v: weight %d, want clamped to %d", algo, w, MaxWeight)
			}
		}
		const n = 30_000
		checkShares(t, countPicks(p, n), n, map[string]float64{addr(0): 1, addr(1): 1, addr(2): 1}, 0.02)
	}
}

// TestLookupAndAdmit: Admit without a guard always admits; with one it
// asks the guard, and NewGuard runs once per joining backend.
func TestLookupAndAdmit(t *testing.T) {
	var mu sync.Mutex
	made := map[string]int{}
	p := newTestPool(t, Options{NewGuard: func(b *Backend) Guard {
		mu.Lock()
		defer mu.Unlock()
		made[b.Address()]++
		return refuseGuard{}
	}}, equal(2))
	p.SetMembers(SourceStatic, equal(2))
	if made[addr(0)] != 1 || made[addr(1)] != 1 {
		t.Fatalf("NewGuard calls %v, want one per backend", made)
	}
	if _, err := backend(t, p, addr(0)).Admit(); !errors.Is(err, errRefused) {
		t.Fatalf("Admit with a refusing guard = %v", err)
	}
	plain := newBackend(addr(9), State{})
	done, err := plain.Admit()
	if err != nil || done == nil {
		t.Fatalf("Admit without guard = %v", err)
	}
	done(ResultOK)
}

var errRefused = errors.New("refused")

type refuseGuard struct{}

func (refuseGuard) Admit() (func(Result), error) { return nil, errRefused }

// TestReleaseCounts: only gateway errors count as failures; local outcomes
// count as nothing.
func TestReleaseCounts(t *testing.T) {
	b := newBackend(addr(0), State{})
	for _, r := range []Result{ResultOK, ResultOK, ResultGatewayStatus, ResultConnectFailed, ResultTimeout, ResultReset, ResultLocal} {
		b.Acquire()
		b.Release(r)
	}
	if b.Requests() != 6 || b.Failures() != 4 || b.InFlight() != 0 {
		t.Fatalf("requests %d failures %d in flight %d, want 6, 4, 0", b.Requests(), b.Failures(), b.InFlight())
	}
}

// TestTransitions: Mark counts each real change once and reports whether
// it changed anything.
func TestTransitions(t *testing.T) {
	p := newTestPool(t, Options{}, equal(2))
	b := backend(t, p, addr(0))
	if !mark(p, b, ReasonEjected, true) || mark(p, b, ReasonEjected, true) {
		t.Fatal("Mark did not report exactly one change")
	}
	mark(p, b, ReasonUnhealthy, true)
	mark(p, b, ReasonEjected, false)
	if b.Down() != ReasonUnhealthy || b.Down().String() != "unhealthy" {
		t.Fatalf("down %v", b.Down())
	}
	got := map[string]uint64{}
	b.Transitions(func(r Reason, on bool, n uint64) {
		k := r.String() + "-"
		if on {
			k = r.String() + "+"
		}
		got[k] = n
	})
	if len(got) != 3 || got["ejected+"] != 1 || got["ejected-"] != 1 || got["unhealthy+"] != 1 {
		t.Fatalf("transitions %v", got)
	}
	if s := (ReasonDrain | ReasonCritical).String(); s != "drain+critical" {
		t.Fatalf("reason string %q", s)
	}
}

// TestStateUpdate: a backend's state changes only through Pool.Update (and
// membership); the reasons are derived from it; the pool's own fields
// (Removed) cannot be written by a caller; a drain held while the backend
// is away returns with it, and only one place holds it at a time.
func TestStateUpdate(t *testing.T) {
	p := newTestPool(t, Options{}, equal(2))
	b := backend(t, p, addr(0))
	st := b.State()
	st.Drained = true // a copy: changing it changes nothing
	if b.Down() != 0 || b.State().Drained {
		t.Fatal("mutating a State copy changed the backend")
	}
	if !p.Update(b, "x", func(s *State) { s.Health, s.Breaker = HealthUnhealthy, BreakerOpen }) {
		t.Fatal("Update setting two reasons reported no change")
	}
	if b.Down() != ReasonUnhealthy|ReasonBreakerOpen || p.Snapshot().EligibleCount() != 1 {
		t.Fatalf("down %s, eligible %d", b.Down(), p.Snapshot().EligibleCount())
	}
	if p.Update(b, "x", func(s *State) { s.Breaker = BreakerOpen; s.Removed = true }) {
		t.Fatal("a no-op Update (and an attempt to set Removed) reported a change")
	}
	if b.State().Removed {
		t.Fatal("Update wrote Removed, which only membership owns")
	}
	if p.Update(b, "x", func(s *State) { s.Breaker = BreakerHalfOpen }) != true || b.State().Breaker != BreakerHalfOpen {
		t.Fatal("open -> half-open did not clear breaker_open")
	}
	if _, err := p.Drain(addr(0)); err != nil {
		t.Fatal(err)
	}
	p.SetMembers(SourceStatic, equal(2)[1:]) // addr(0) leaves, drained
	if !b.State().Removed || !b.State().Drained {
		t.Fatalf("left backend state %+v", b.State())
	}
	if d := p.Drained(); len(d) != 1 || d[0] != addr(0) {
		t.Fatalf("Drained() while away = %v", d)
	}
	p.SetMembers(SourceStatic, equal(2))
	back := backend(t, p, addr(0))
	if back == b || !back.State().Drained || back.State().Removed || back.State().Health != HealthUnknown {
		t.Fatalf("returned backend state %+v (same object %v)", back.State(), back == b)
	}
	if d := p.Drained(); len(d) != 1 {
		t.Fatalf("Drained() after return = %v: the drain is held twice", d)
	}
}
