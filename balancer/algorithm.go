package balancer

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// Algorithm is a way of picking a backend among the eligible ones. All of
// them honour weights and slow start.
type Algorithm uint8

// The algorithms, named in config as round_robin, least_conn, ip_hash and
// hash and least_latency.
const (
	RoundRobin   Algorithm = iota // smooth weighted round robin
	LeastConn                     // fewest in-flight requests per unit of weight
	IPHash                        // weighted rendezvous hashing of the client address
	Hash                          // weighted rendezvous hashing of a request key, with bounded loads
	LeastLatency                  // power of two choices over peak-EWMA latency x (in-flight + 1)
)

// algorithmNames are the config names, indexed by Algorithm. config
// validates balance with ParseAlgorithm, so this is the one list.
var algorithmNames = [...]string{"round_robin", "least_conn", "ip_hash", "hash", "least_latency"}

// ParseAlgorithm turns a config name into an Algorithm; "" is RoundRobin.
func ParseAlgorithm(name string) (Algorithm, error) {
	if name == "" {
		return RoundRobin, nil
	}
	for i, n := range algorithmNames {
		if n == name {
			return Algorithm(i), nil
		}
	}
	last := len(algorithmNames) - 1
	return 0, fmt.Errorf("unknown balance %q (want %s or %s)", name, strings.Join(algorithmNames[:last], ", "), algorithmNames[last])
}

func (a Algorithm) String() string {
	return algorithmNames[a]
}

// UsesKey reports whether the algorithm needs the key passed to Pick: the
// client hash (HashIP) for ip_hash, the request key (HashKey) for hash.
func (a Algorithm) UsesKey() bool { return a == IPHash || a == Hash }

// selector picks from one tier. Implementations are built once per snapshot
// by the pool's writer and are then read-only; pick must not lock or
// allocate. tried holds backends this request already used: pick returns one
// not in it, or nil when none is left.
type selector interface {
	pick(t *tier, key uint64, tried []*Backend) *Backend
}

func newSelector(o *Options, t *tier, cursor *atomic.Uint64) selector {
	switch o.Algorithm {
	case LeastLatency:
		return newLeastLatency(t, o.EWMADecay)
	case LeastConn:
		return newLeastConn(t)
	case IPHash:
		return newIPHash(t)
	case Hash:
		return newKeyHash(t, o.HashBalanceFactor, o.HashFallback, cursor)
	}
	return newRoundRobin(t, cursor)
}

// firstUntried is the fallback of every selector once its own order is
// exhausted by tried backends.
func firstUntried(t *tier, tried []*Backend) *Backend {
	for _, b := range t.set {
		if !contains(tried, b) {
			return b
		}
	}
	return nil
}

func gcd(a, b uint32) uint32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
