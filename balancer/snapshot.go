package balancer

import (
	"slices"
	"strings"
	"time"
)

// Tier says which set of members a snapshot routes new requests to.
type Tier uint8

// Tiers, in the order the pool falls back through them.
const (
	TierPrimary Tier = iota // eligible primaries
	TierPanic               // too few eligible primaries: every non-drained primary
	TierBackup              // no eligible primary: eligible backups
	TierNone                // nothing eligible: requests get 503
)

func (t Tier) String() string {
	return [...]string{"primary", "panic", "backup", "none"}[t]
}

// Snapshot is one immutable view of a pool: its members and the set that new
// requests go to. Never modify a published snapshot; the backends it points
// to change only through their atomic fields.
type Snapshot struct {
	// Members are all backends of the pool, sorted by address.
	Members []*Backend
	// Tier is the set new requests go to.
	Tier Tier

	name     string // the pool's, read lock-free by Pool.Name
	algo     Algorithm
	policy   string
	eligible []bool // parallel to Members: may the balancer pick it now
	active   tier
}

// Eligible reports whether the balancer may pick Members[i] for a new
// request.
func (s *Snapshot) Eligible(i int) bool { return s.eligible[i] }

// EligibleCount is how many backends new requests are spread over.
func (s *Snapshot) EligibleCount() int { return len(s.active.set) }

func (s *Snapshot) pick(key uint64, tried []*Backend) *Backend {
	if len(s.active.set) == 0 {
		return nil
	}
	// A type switch, not an interface call: the compiler can then see that
	// no selector keeps tried, so a caller's tried list stays on its stack.
	switch sel := s.active.sel.(type) {
	case *roundRobin:
		return sel.pick(&s.active, key, tried)
	case *leastConn:
		return sel.pick(&s.active, key, tried)
	case *ipHash:
		return sel.pick(&s.active, key, tried)
	case *keyHash:
		return sel.pick(&s.active, key, tried)
	case *leastLatency:
		return sel.pick(&s.active, key, tried)
	}
	panic("balancer: selector without a case in Snapshot.pick") // newSelector makes only these
}

// tier is the set a snapshot picks from, with what its algorithm
// precomputed over it.
type tier struct {
	set     []*Backend
	weights []uint32 // effective weights, parallel to set (slow start applied)
	sel     selector
}

// rampScale is the weight resolution during slow start: a weight w counts as
// w*rampScale at full strength, so a ramp from 10% has 10 integer steps even
// for weight 1.
const rampScale = 10

func buildSnapshot(p *Pool, now time.Time) (*Snapshot, bool) {
	s := &Snapshot{name: p.opts.Name, algo: p.opts.Algorithm, policy: p.opts.Policy}
	s.Members = make([]*Backend, 0, len(p.members))
	for _, b := range p.members {
		s.Members = append(s.Members, b)
		b.lat.tau.Store(int64(p.opts.EWMADecay)) // follows a reload
	}
	slices.SortFunc(s.Members, func(a, b *Backend) int { return strings.Compare(a.addr, b.addr) })

	var prim, back, spare []*Backend
	primTotal := 0
	for _, b := range s.Members {
		down := b.Down()
		if b.Backup() {
			if down == 0 {
				back = append(back, b)
			}
			continue
		}
		if down&(ReasonDrain|ReasonRemoved|ReasonAwaitingReady) != 0 {
			continue // out by an operator's decision, or awaiting one: not for panic mode either
		}
		primTotal++
		switch {
		case down == 0:
			prim = append(prim, b)
		case down&(ReasonBreakerOpen|ReasonCritical) == 0:
			spare = append(spare, b) // only health says no: usable in panic
		}
	}

	var set []*Backend
	switch {
	case len(prim) > 0 && len(back) == 0 && p.opts.PanicThreshold > 0 && len(prim)*100 < p.opts.PanicThreshold*primTotal:
		// design.md: backups take over before any panic-threshold rule
		// applies, so an eligible backup keeps unhealthy primaries out.
		s.Tier, set = TierPanic, append(prim, spare...)
		slices.SortFunc(set, func(a, b *Backend) int { return strings.Compare(a.addr, b.addr) })
	case len(prim) > 0:
		s.Tier, set = TierPrimary, prim
	case len(back) > 0:
		s.Tier, set = TierBackup, back
	default:
		s.Tier = TierNone
	}

	ramping := false
	weights := make([]uint32, len(set))
	for i, b := range set {
		w := uint64(b.Weight()) * rampScale
		if b.state.Load().Degraded {
			w = max(w/DegradedDivisor, 1) // a warning check: eligible, at reduced weight
		}
		if since := b.state.Load().eligibleSince; since != 0 && p.opts.SlowStart > 0 {
			if el := now.Sub(time.Unix(0, since)); el < p.opts.SlowStart {
				frac := max(float64(el)/float64(p.opts.SlowStart), 0.1)
				w = max(uint64(float64(w)*frac), 1)
				ramping = true
			}
		}
		weights[i] = uint32(w)
	}
	s.active = tier{set: set, weights: weights}
	s.active.sel = newSelector(&p.opts, &s.active, &p.rrCursor)

	s.eligible = make([]bool, len(s.Members))
	for i, b := range s.Members {
		s.eligible[i] = slices.Contains(set, b)
	}
	return s, ramping
}

// EffectiveWeight reports the weight the snapshot gives b now (slow start
// applied, in units of 1/10 of a configured weight), or 0 when b is not
// eligible.
func (s *Snapshot) EffectiveWeight(b *Backend) int {
	if i := slices.Index(s.active.set, b); i >= 0 {
		return int(s.active.weights[i])
	}
	return 0
}

// contains is a linear scan: tried lists hold a handful of backends.
func contains(tried []*Backend, b *Backend) bool {
	for _, t := range tried {
		if t == b {
			return true
		}
	}
	return false
}
