package balancer

import (
	"math"
	"sync/atomic"
)

// NoKey is the key of a request that carries no hash key (the header,
// cookie or query parameter a hash pool hashes on is absent): a hash pool
// picks it with its fallback algorithm. HashKey never returns it.
const NoKey uint64 = 0

// HashKey hashes a request's key (a header, cookie or query value, a path)
// for the hash algorithm. Like HashIP it is deterministic across processes
// and restarts, so every kelpie instance sends a key to the same backend.
// It never returns NoKey.
func HashKey(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	if h = mix64(h); h == NoKey {
		h = 1
	}
	return h
}

// keyHash is the hash algorithm: weighted rendezvous hashing of a request
// key (the same scoring as ip_hash, so about 1/N of the keys move when one
// of N backends joins or leaves), with optional bounded loads and a
// fallback for requests without a key.
//
// Bounded loads follow "Consistent Hashing with Bounded Loads" (Mirrokni,
// Thorup, Zadimoghaddam, 2018), as HAProxy's hash-balance-factor and
// Envoy's hash_balance_factor do: with factor c (percent) and m requests in
// flight on the tier, backend i may take a new request only while its
// in-flight count is below c*(m+1)*w_i/W (W the tier's total weight). A key
// whose first choice is full goes to its second choice, and so on, in the
// key's own rendezvous order, so a hot key spills over to the same few
// backends instead of everywhere. The bound only bites under concurrency:
// an idle pool sends every key to its first choice.
type keyHash struct {
	top     ipHash // the unbounded pick: a key's first untried choice
	uniform bool   // all weights equal: scores without logarithms
	factor  uint64 // balance factor in percent; 0 = unbounded
	total   uint64 // the tier's total weight
	rr      *roundRobin
	lc      *leastConn // the fallback: lc when set, else rr
}

var _ selector = (*keyHash)(nil)

// maxBoundedRounds caps how many full backends a bounded pick walks past in
// the key's order before it takes the least loaded backend instead (never
// full: its load per weight is at most the average). It keeps a pick O(N)
// when many backends are at their bound.
const maxBoundedRounds = 8

func newKeyHash(t *tier, factor int, fallback Algorithm, cursor *atomic.Uint64) *keyHash {
	h := &keyHash{uniform: true}
	if factor > 0 {
		h.factor = uint64(max(factor, 100))
	}
	for _, w := range t.weights {
		h.total += uint64(w)
		if w != t.weights[0] {
			h.uniform = false
		}
	}
	h.top.uniform = h.uniform
	if fallback == LeastConn {
		h.lc = newLeastConn(t)
	} else {
		h.rr = newRoundRobin(t, cursor)
	}
	return h
}

func (h *keyHash) pick(t *tier, key uint64, tried []*Backend) *Backend {
	if key == NoKey {
		if h.lc != nil {
			return h.lc.pick(t, key, tried)
		}
		return h.rr.pick(t, key, tried)
	}
	if h.factor == 0 {
		return h.top.pick(t, key, tried) // ip_hash's scan: the same order, compared without floats when it can
	}
	var load uint64
	for _, b := range t.set {
		load += uint64(max(b.InFlight(), 0))
	}
	// Backend i has room when inflight_i < c*(m+1)*w_i/W, multiplied out.
	budget := h.factor * (load + 1)
	prevScore, prev := math.Inf(1), -1
	for range maxBoundedRounds {
		i, s := h.next(t, key, tried, prevScore, prev)
		if i < 0 {
			return nil
		}
		if uint64(max(t.set[i].InFlight(), 0))*100*h.total < budget*uint64(t.weights[i]) {
			return t.set[i]
		}
		prevScore, prev = s, i
	}
	return h.leastLoaded(t, tried)
}

// next returns the backend after (prevScore, prev) in key's rendezvous
// order (score descending, ties by index), skipping tried ones, and its
// score; -1 when none is left.
func (h *keyHash) next(t *tier, key uint64, tried []*Backend, prevScore float64, prev int) (int, float64) {
	best := -1
	var bestScore float64
	for i, b := range t.set {
		if len(tried) > 0 && contains(tried, b) {
			continue
		}
		// Backend i's rendezvous score for key, higher first: ip_hash's.
		x := mix64(key ^ b.hash)
		s := float64(x >> 11) // equal weights: monotonic in x, ip_hash's order
		if !h.uniform {
			u := (s + 0.5) / (1 << 53) // uniform in (0,1)
			s = -float64(t.weights[i]) / math.Log(u)
		}
		if s > prevScore || s == prevScore && i <= prev {
			continue // at or before the previous one in the order
		}
		if best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best, bestScore
}

// leastLoaded is the untried backend with the fewest in-flight requests per
// unit of weight (first in tier order on ties), or nil.
func (h *keyHash) leastLoaded(t *tier, tried []*Backend) *Backend {
	best := -1
	for i, b := range t.set {
		if len(tried) > 0 && contains(tried, b) {
			continue
		}
		if best < 0 || less(t, i, best) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	return t.set[best]
}
