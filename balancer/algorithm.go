package balancer

import (
	"fmt"
	"sync/atomic"
)

// Algorithm is a way of picking a backend among the eligible ones. All three
// honour weights and slow start.
type Algorithm uint8

// The algorithms, named in config as round_robin, least_conn and ip_hash.
const (
	RoundRobin Algorithm = iota // smooth weighted round robin
	LeastConn                   // fewest in-flight requests per unit of weight
	IPHash                      // weighted rendezvous hashing of the client address
)

// ParseAlgorithm turns a config name into an Algorithm.
func ParseAlgorithm(name string) (Algorithm, error) {
	switch name {
	case "round_robin", "":
		return RoundRobin, nil
	case "least_conn":
		return LeastConn, nil
	case "ip_hash":
		return IPHash, nil
	}
	return 0, fmt.Errorf("unknown balance %q (want round_robin, least_conn or ip_hash)", name)
}

func (a Algorithm) String() string {
	return [...]string{"round_robin", "least_conn", "ip_hash"}[a]
}

// UsesKey reports whether the algorithm needs the client hash passed to Pick.
func (a Algorithm) UsesKey() bool { return a == IPHash }

// selector picks from one tier. Implementations are built once per snapshot
// by the pool's writer and are then read-only; pick must not lock or
// allocate. tried holds backends this request already used: pick returns one
// not in it, or nil when none is left.
type selector interface {
	pick(t *tier, key uint64, tried []*Backend) *Backend
}

func newSelector(a Algorithm, t *tier, cursor *atomic.Uint64) selector {
	switch a {
	case LeastConn:
		return newLeastConn(t)
	case IPHash:
		return newIPHash(t)
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
