package admin

import (
	"strings"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// UpstreamsResponse is the body of GET /api/v1/upstreams.
type UpstreamsResponse struct {
	Upstreams []Upstream `json:"upstreams"`
}

// Upstream is one pool as the admin API shows it.
type Upstream struct {
	// Name is the upstream's name from the config.
	Name string `json:"name"`
	// Balance is the algorithm: round_robin, least_conn, ip_hash or hash.
	Balance string `json:"balance"`
	// Policy is the balancing policy in words: the algorithm and, where
	// set, what it hashes, its load bound and sticky cookies (an
	// extension; "hash header:X-User, bound 125%, sticky cookie lb").
	Policy string `json:"policy"`
	// Tier is the set new requests go to: primary, panic, backup or none.
	Tier string `json:"tier"`
	// EligibleBackends is how many backends new requests are spread over.
	EligibleBackends int `json:"eligible_backends"`
	// Backends are the pool's members, sorted by address.
	Backends []Backend `json:"backends"`
}

// Backend is one pool member as the admin API shows it. The fields up to
// Failures are fixed by the contract in design.md; Down is an extension.
type Backend struct {
	Address string `json:"address"`
	Weight  int    `json:"weight"`
	Backup  bool   `json:"backup"`
	// Source is "static", "consul" or "static+consul".
	Source string `json:"source"`
	// Health is the active-probe verdict: healthy, unhealthy or unknown.
	Health string `json:"health"`
	// Ejected is true while passive outlier detection keeps it out (down
	// says for what: ejected, slow or errors).
	Ejected bool `json:"ejected"`
	// Breaker is closed, open or half-open.
	Breaker string `json:"breaker"`
	// Admin is ready, draining (drained, requests in flight) or drained.
	Admin string `json:"admin"`
	// Eligible is true exactly when the balancer may pick this backend for a
	// new request.
	Eligible bool  `json:"eligible"`
	InFlight int64 `json:"in_flight"`
	// Requests counts finished attempts; Failures those that ended in a
	// gateway error (connect failure, reset, timeout, 502/503/504).
	Requests uint64 `json:"requests"`
	Failures uint64 `json:"failures"`
	// Down lists why the backend is out of rotation: unhealthy, ejected,
	// breaker_open, drain, critical, removed, slow, errors. Empty when none.
	Down []string `json:"down"`
	// LastDetectionMs is the last time to detect: first failure seen to
	// out of rotation, by LastDetectedBy (active, passive or breaker).
	// null until the backend first left rotation for a health reason.
	LastDetectionMs *int64 `json:"last_detection_ms"`
	LastDetectedBy  string `json:"last_detected_by,omitempty"`
	// LastRecoveryMs is the last time to recover: out of rotation to back
	// in full rotation. null until the backend first recovered.
	LastRecoveryMs *int64 `json:"last_recovery_ms"`
	// CheckOutput is the first 4 KiB of the last script check's output
	// (health.active.type exec); omitted otherwise.
	CheckOutput string `json:"check_output,omitempty"`
	// LatencyMS is the peak-EWMA of its response latency in milliseconds
	// (errors weigh in at their penalty; decays over ewma_decay), 0 before
	// its first answer and after it comes back into rotation.
	LatencyMS float64 `json:"latency_ms"`
	// Errors counts finished attempts that were gateway errors or 5xx
	// answers. SuccessRate is 1 - errors/requests over the recent past:
	// the attempts since the start of the previous balancer.RecentWindow
	// (10s), so one to two windows (1 with no requests).
	Errors      uint64  `json:"errors"`
	SuccessRate float64 `json:"success_rate"`
	// Drain says who drained the backend, why, and whether for this
	// instance (scope local) or the whole cluster (scope fleet). Absent
	// when the backend is ready.
	Drain *DrainInfo `json:"drain,omitempty"`
}

// ErrorResponse is the body of every error reply.
type ErrorResponse struct {
	Error string `json:"error"`
}

// WeightRequest is the body of PUT .../weight. Weight 0 clears an earlier
// override, restoring the weight the sources give.
type WeightRequest struct {
	Weight *int `json:"weight"`
}

// describePools renders the current state of pools.
func describePools(pools []*balancer.Pool) UpstreamsResponse {
	out := UpstreamsResponse{Upstreams: make([]Upstream, 0, len(pools))}
	for _, p := range pools {
		if p != nil {
			out.Upstreams = append(out.Upstreams, describePool(p))
		}
	}
	return out
}

func describePool(p *balancer.Pool) Upstream {
	s := p.Snapshot()
	u := Upstream{
		Name:             p.Name(),
		Balance:          p.Algorithm().String(),
		Policy:           p.Policy(),
		Tier:             s.Tier.String(),
		EligibleBackends: s.EligibleCount(),
		Backends:         make([]Backend, len(s.Members)),
	}
	for i, b := range s.Members {
		u.Backends[i] = describeBackend(b, s.Eligible(i))
	}
	return u
}

func describeBackend(b *balancer.Backend, eligible bool) Backend {
	st := b.State()
	down := st.Down()
	reasons := []string{}
	if down != 0 {
		reasons = strings.Split(down.String(), "+")
	}
	_, _, errs := b.LatencyTotals()
	rate, _ := b.RecentSuccess(time.Now())
	out := Backend{
		LatencyMS:   float64(b.LatencyEWMA().Microseconds()) / 1000,
		Errors:      errs,
		SuccessRate: rate,
		Address:     b.Address(),
		Weight:      b.Weight(),
		Backup:      b.Backup(),
		Source:      b.Sources().String(),
		Health:      healthOf(st),
		Ejected:     st.Ejected || st.Slow || st.Errors,
		Breaker:     st.Breaker.String(),
		Admin:       b.Admin().String(),
		Eligible:    eligible,
		InFlight:    b.InFlight(),
		Requests:    b.Requests(),
		Failures:    b.Failures(),
		Down:        reasons,
	}
	out.CheckOutput = b.CheckOutput()
	if d, by, ok := b.LastDetection(); ok {
		out.LastDetectionMs, out.LastDetectedBy = msPtr(d), by
	}
	if d, ok := b.LastRecovery(); ok {
		out.LastRecoveryMs = msPtr(d)
	}
	return out
}

// describeOne renders b with its eligibility in the pool's current snapshot.
func describeOne(p *balancer.Pool, b *balancer.Backend) Backend {
	s := p.Snapshot()
	for i, m := range s.Members {
		if m == b {
			return describeBackend(b, s.Eligible(i))
		}
	}
	return describeBackend(b, false)
}

// healthOf is the API's health: the probe verdict, or "degraded" for a
// healthy backend whose script check warns.
func healthOf(st balancer.State) string {
	if st.Degraded && st.Health == balancer.HealthHealthy {
		return "degraded"
	}
	return st.Health.String()
}
