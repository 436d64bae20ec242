package balancer

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// algorithms lists every picker, for tests that must hold for all of them.
var algorithms = []Algorithm{RoundRobin, LeastConn, IPHash, Hash, LeastLatency}

// addr names the i-th test backend; zero-padded so address order is index
// order.
func addr(i int) string { return fmt.Sprintf("10.0.0.%03d:80", i) }

// weighted returns members addr(0..) with the given weights.
func weighted(ws ...int) []Member {
	ms := make([]Member, len(ws))
	for i, w := range ws {
		ms[i] = Member{Address: addr(i), Weight: w}
	}
	return ms
}

// equal returns n members of weight 1.
func equal(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Address: addr(i), Weight: 1}
	}
	return ms
}

// newTestPool builds a pool with static members ms and closes it at the end
// of the test.
func newTestPool(t testing.TB, opts Options, ms []Member) *Pool {
	t.Helper()
	p := NewPool(opts)
	p.SetMembers(SourceStatic, ms)
	t.Cleanup(p.Close)
	return p
}

// backend returns the member at address a or fails the test.
func backend(t testing.TB, p *Pool, a string) *Backend {
	t.Helper()
	b := p.Lookup(a)
	if b == nil {
		t.Fatalf("no backend %s in pool", a)
	}
	return b
}

// clientKey is the ip_hash key of the i-th test client.
func clientKey(i int) uint64 {
	return HashIP(netip.AddrFrom4([4]byte{172, byte(i >> 16), byte(i >> 8), byte(i)}))
}

// countPicks picks n times (client i uses clientKey(i)) and counts picks
// per address; nil picks count under "".
func countPicks(p *Pool, n int) map[string]int {
	c := map[string]int{}
	for i := range n {
		b := p.Pick(clientKey(i), nil)
		if b == nil {
			c[""]++
			continue
		}
		c[b.Address()]++
	}
	return c
}

// checkShares fails unless each address's share of the n picks in got is
// within tol of want (weights, normalised here).
func checkShares(t *testing.T, got map[string]int, n int, want map[string]float64, tol float64) {
	t.Helper()
	var total float64
	for _, w := range want {
		total += w
	}
	for a, w := range want {
		share := float64(got[a]) / float64(n)
		if math.Abs(share-w/total) > tol {
			t.Errorf("%s: share %.4f, want %.4f ± %.3f (counts %v)", a, share, w/total, tol, got)
		}
	}
	for a := range got {
		if _, ok := want[a]; !ok {
			t.Errorf("%s got %d picks, want none (counts %v)", a, got[a], got)
		}
	}
}

// clock is an injectable Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// mark sets (on) or clears reason r on b through Pool.Update, as the
// reason's owner does.
func mark(p *Pool, b *Backend, r Reason, on bool) bool {
	return p.Update(b, "test", func(s *State) {
		switch r {
		case ReasonUnhealthy:
			s.Health = HealthHealthy
			if on {
				s.Health = HealthUnhealthy
			}
		case ReasonEjected:
			s.Ejected = on
		case ReasonBreakerOpen:
			s.Breaker = BreakerClosed
			if on {
				s.Breaker = BreakerOpen
			}
		case ReasonDrain:
			s.Drained = on
		case ReasonCritical:
			s.Critical = on
		default:
			panic("mark: " + r.String())
		}
	})
}

// setHealth records an active-probe verdict on b, as health does.
func setHealth(p *Pool, b *Backend, healthy bool) bool {
	return mark(p, b, ReasonUnhealthy, !healthy)
}
