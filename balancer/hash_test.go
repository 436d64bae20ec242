package balancer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// userKey is the hash key of the i-th test user ("user-<i>").
func userKey(i int) uint64 { return HashKey([]byte("user-" + strconv.Itoa(i))) }

// keyAssignment maps each of n keys to the address the pool picks for it.
func keyAssignment(p *Pool, n int) []string {
	out := make([]string, n)
	for i := range out {
		if b := p.Pick(userKey(i), nil); b != nil {
			out[i] = b.Address()
		}
	}
	return out
}

// TestHashSameKeySameBackend: a key reaches the same backend on every pick,
// in a second pool with the same members (another kelpie, a restart), and
// after a membership refresh that changes nothing.
func TestHashSameKeySameBackend(t *testing.T) {
	for _, ws := range [][]int{{1, 1, 1, 1, 1}, {3, 1, 2, 1, 1}} {
		p := newTestPool(t, Options{Algorithm: Hash}, weighted(ws...))
		other := newTestPool(t, Options{Algorithm: Hash, HashBalanceFactor: 150}, weighted(ws...))
		first := keyAssignment(p, 5000)
		p.SetMembers(SourceStatic, weighted(ws...))
		for _, again := range [][]string{keyAssignment(p, 5000), keyAssignment(other, 5000)} {
			for i := range first {
				if first[i] == "" || again[i] != first[i] {
					t.Fatalf("weights %v: key %d went to %q, then %q", ws, i, first[i], again[i])
				}
			}
		}
	}
}

// TestHashMovement: removing one of N backends moves only the keys it had
// (about 1/N); adding one moves about 1/(N+1) of the keys, all to it.
func TestHashMovement(t *testing.T) {
	const keys = 20_000
	for _, n := range []int{3, 10, 30} {
		for _, weighted := range []bool{false, true} {
			t.Run(fmt.Sprintf("n=%d weighted=%v", n, weighted), func(t *testing.T) {
				ms := equal(n + 1)
				if weighted {
					for i := range ms {
						ms[i].Weight = 1 + i%3
					}
				}
				p := newTestPool(t, Options{Algorithm: Hash}, ms[:n])
				before := keyAssignment(p, keys)
				p.SetMembers(SourceStatic, ms) // one joins
				joined := keyAssignment(p, keys)
				p.SetMembers(SourceStatic, ms[1:]) // another leaves
				left := keyAssignment(p, keys)

				var total, wNew, wGone int
				for _, m := range ms {
					total += m.Weight
				}
				wNew, wGone = ms[n].Weight, ms[0].Weight
				moved := 0
				for i := range before {
					if joined[i] != before[i] {
						moved++
						if joined[i] != ms[n].Address {
							t.Fatalf("key %d moved %s -> %s, not to the new backend", i, before[i], joined[i])
						}
					}
				}
				checkShare(t, "join", moved, keys, float64(wNew)/float64(total))
				moved = 0
				for i := range joined {
					if left[i] != joined[i] {
						moved++
						if joined[i] != ms[0].Address {
							t.Fatalf("key %d moved %s -> %s though its backend stayed", i, joined[i], left[i])
						}
					}
				}
				checkShare(t, "leave", moved, keys, float64(wGone)/float64(total))
			})
		}
	}
}

// checkShare fails unless moved/keys is within 5 standard deviations of
// the binomial share want.
func checkShare(t *testing.T, what string, moved, keys int, want float64) {
	t.Helper()
	got := float64(moved) / float64(keys)
	sd := math.Sqrt(want * (1 - want) / float64(keys))
	t.Logf("%s: %.2f%% of keys moved, expected %.2f%%", what, 100*got, 100*want)
	if math.Abs(got-want) > 5*sd+0.002 {
		t.Errorf("%s: %.2f%% of keys moved, want about %.2f%%", what, 100*got, 100*want)
	}
}

// TestHashWeights: with weights 1, 2, 3, 4 the keys split 10/20/30/40 %.
func TestHashWeights(t *testing.T) {
	const keys = 40_000
	p := newTestPool(t, Options{Algorithm: Hash}, weighted(1, 2, 3, 4))
	count := map[string]int{}
	for _, a := range keyAssignment(p, keys) {
		count[a]++
	}
	for i, w := range []int{1, 2, 3, 4} {
		checkShare(t, addr(i), count[addr(i)], keys, float64(w)/10)
	}
}

// TestHashNoKeyFallback: requests without a key are spread by the
// fallback, round robin by default, least_conn when asked.
func TestHashNoKeyFallback(t *testing.T) {
	p := newTestPool(t, Options{Algorithm: Hash}, equal(3))
	seen := map[*Backend]int{}
	for range 30 {
		seen[p.Pick(NoKey, nil)]++
	}
	for b, n := range seen {
		if n != 10 {
			t.Errorf("round robin fallback: %s got %d of 30", b.Address(), n)
		}
	}
	if len(seen) != 3 {
		t.Errorf("round robin fallback reached %d of 3 backends", len(seen))
	}
	lc := newTestPool(t, Options{Algorithm: Hash, HashFallback: LeastConn}, equal(3))
	busy := backend(t, lc, addr(0))
	busy.Acquire()
	defer busy.Release(ResultOK)
	for range 50 {
		if b := lc.Pick(NoKey, nil); b == busy {
			t.Fatal("least_conn fallback picked the only busy backend")
		}
	}
}

// TestHashBoundedNextChoice: a key whose first choice is at its bound goes
// to its own second choice (what a retry would pick), not anywhere.
func TestHashBoundedNextChoice(t *testing.T) {
	p := newTestPool(t, Options{Algorithm: Hash, HashBalanceFactor: 125}, equal(10))
	for k := range 200 {
		key := userKey(k)
		first := p.Pick(key, nil)
		second := p.Pick(key, []*Backend{first})
		// Two in flight on first, none elsewhere: bound 1.25*3/10 < 2.
		first.Acquire()
		first.Acquire()
		if got := p.Pick(key, nil); got != second {
			t.Fatalf("key %d: first choice full, picked %s, want its second choice %s", k, got.Address(), second.Address())
		}
		first.Release(ResultOK)
		first.Release(ResultOK)
		if got := p.Pick(key, nil); got != first {
			t.Fatalf("key %d: back under the bound, picked %s, want %s", k, got.Address(), first.Address())
		}
	}
}

// zipfLoad drives a pool with concurrency requests in flight, keys drawn
// from a Zipf distribution (s=1.1 over 10,000 keys: the hottest key is
// about a tenth of all requests), for steps picks. Each step releases one
// random request and picks a new one. It returns the worst ratio seen of a
// backend's in-flight count (after the pick) to the average in flight, how
// many picks left a backend above ceil(factor x average) (the bound), and
// how often each backend was picked.
func zipfLoad(t *testing.T, p *Pool, factor, concurrency, steps int) (worst float64, over int, picks map[*Backend]int) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(r, 1.1, 1, 9999)
	n := len(p.Snapshot().Members)
	var held []*Backend
	picks = map[*Backend]int{}
	for step := range steps {
		if len(held) == concurrency {
			j := r.IntN(len(held))
			held[j].Release(ResultOK)
			held[j] = held[len(held)-1]
			held = held[:len(held)-1]
		}
		b := p.Pick(userKey(int(zipf.Uint64())), nil)
		if !b.Acquire() {
			t.Fatal("acquire refused")
		}
		held = append(held, b)
		picks[b]++
		if step < concurrency {
			continue // warming up
		}
		avg := float64(len(held)) / float64(n)
		worst = max(worst, float64(b.InFlight())/avg)
		if float64(b.InFlight()) > math.Ceil(float64(factor)/100*avg-1e-9) {
			over++
		}
	}
	for _, b := range held {
		b.Release(ResultOK)
	}
	return worst, over, picks
}

// TestHashBoundedLoadsZipf: under Zipf-skewed keys no pick leaves a
// backend with more than ceil(factor x the average) in flight; without the
// bound the hot key's backend carries far more.
func TestHashBoundedLoadsZipf(t *testing.T) {
	const n, concurrency, steps = 10, 200, 50_000
	for _, factor := range []int{125, 150, 200} {
		p := newTestPool(t, Options{Algorithm: Hash, HashBalanceFactor: factor}, equal(n))
		worst, over, picks := zipfLoad(t, p, factor, concurrency, steps)
		t.Logf("factor %d%%: worst backend load %.2f x average; picks per backend %v", factor, worst, counts(picks))
		if over > 0 {
			t.Errorf("factor %d%%: %d picks left a backend above the bound (worst %.2f x average)", factor, over, worst)
		}
	}
	p := newTestPool(t, Options{Algorithm: Hash}, equal(n))
	worst, _, picks := zipfLoad(t, p, 100, concurrency, steps)
	t.Logf("unbounded: worst backend load %.2f x average; picks per backend %v", worst, counts(picks))
	if worst < 2 {
		t.Errorf("unbounded: worst load only %.2f x average: the Zipf keys are not skewed enough to test the bound", worst)
	}
}

func counts(m map[*Backend]int) []int {
	var out []int
	for _, a := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9} {
		for b, n := range m {
			if b.Address() == addr(a) {
				out = append(out, n)
			}
		}
	}
	return out
}

// TestHashKeyNeverNoKey: the empty key and ordinary keys hash to something
// other than NoKey, so a present but empty value is still a key.
func TestHashKeyNeverNoKey(t *testing.T) {
	for _, k := range []string{"", "a", "user-1"} {
		if HashKey([]byte(k)) == NoKey {
			t.Errorf("HashKey(%q) = NoKey", k)
		}
	}
}

// TestAcquireDraining: a pinned request may still reach a backend drained
// less than the grace ago; not after it, not a removed one.
func TestAcquireDraining(t *testing.T) {
	clock := newClock()
	p := newTestPool(t, Options{Now: clock.Now}, equal(2))
	b := backend(t, p, addr(0))
	if _, err := p.Drain(addr(0)); err != nil {
		t.Fatal(err)
	}
	if b.Acquire() {
		t.Fatal("Acquire admitted a drained backend")
	}
	if !b.AcquireDraining(5e9, clock.Now()) {
		t.Fatal("AcquireDraining refused a backend drained 0s ago with 5s grace")
	}
	b.Release(ResultOK)
	clock.Advance(5e9)
	if b.AcquireDraining(5e9, clock.Now()) {
		t.Fatal("AcquireDraining admitted a backend drained 5s ago with 5s grace")
	}
	if got := b.State().DrainedSince(); got.IsZero() {
		t.Error("DrainedSince is zero for a drained backend")
	}
	p.SetMembers(SourceStatic, equal(2)[1:])
	clock.Advance(-5e9)
	if b.AcquireDraining(1e12, clock.Now()) {
		t.Fatal("AcquireDraining admitted a removed backend")
	}
}
