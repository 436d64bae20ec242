package balancer

import (
	"encoding/binary"
	"math"
	"net/netip"
)

// ipHash maps a client to a backend by weighted rendezvous hashing
// (highest random weight, Thaler and Ravishankar): every backend scores the
// client's key, the highest score wins. Removing one of N backends moves only
// the clients that backend had (about 1/N); adding one moves about 1/(N+1).
// Weighted scores use -w/ln(u) (Schindelhauer and Schomaker's logarithmic
// method), which keeps that property and gives each backend a share
// proportional to its weight. Picking is O(N) with no allocation; retries
// take the next-highest score.
type ipHash struct {
	uniform bool // all weights equal: compare raw hashes, no logarithms
}

var _ selector = (*ipHash)(nil)

func newIPHash(t *tier) *ipHash {
	h := &ipHash{uniform: true}
	for _, w := range t.weights {
		if w != t.weights[0] {
			h.uniform = false
		}
	}
	return h
}

func (h *ipHash) pick(t *tier, key uint64, tried []*Backend) *Backend {
	best := -1
	var bestHash uint64
	var bestScore float64
	for i, b := range t.set {
		if len(tried) > 0 && contains(tried, b) {
			continue
		}
		x := mix64(key ^ b.hash)
		if h.uniform {
			if best < 0 || x > bestHash {
				best, bestHash = i, x
			}
			continue
		}
		u := (float64(x>>11) + 0.5) / (1 << 53) // uniform in (0,1)
		score := -float64(t.weights[i]) / math.Log(u)
		if best < 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		return nil
	}
	return t.set[best]
}

// HashIP hashes a client address into an ip_hash key. It is deterministic
// across processes and restarts (no random seed), and an IPv4 address hashes
// the same in its IPv4-mapped IPv6 form.
func HashIP(a netip.Addr) uint64 {
	b := a.Unmap().As16()
	return mix64(binary.BigEndian.Uint64(b[:8]) ^ mix64(binary.BigEndian.Uint64(b[8:])))
}

// hashString is FNV-1a, finished with mix64.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

// mix64 is the splitmix64 finalizer: a fast bijective scrambler.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
