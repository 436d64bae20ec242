package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kelpie-lb/kelpie/balancer"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("kelpie_"+name, help, labels, nil)
}

var (
	requestsDesc = desc("requests_total",
		"Finished attempts on a backend by HTTP status code (kelpie's own 502/504 for gateway errors).",
		"upstream", "backend", "code")
	durationDesc = desc("request_duration_seconds",
		"Duration of whole client requests, all attempts included.", "upstream")
	retriesDesc = desc("retries_total",
		"Extra attempts, each on another backend.", "upstream")
	hedgesDesc = desc("hedges_total",
		"Hedged attempts: a second attempt sent because the first had not answered within the hedge delay.", "upstream")
	unavailableDesc = desc("upstream_unavailable_total",
		"Requests answered 503 because no backend was eligible.", "upstream")
	tunnelsDesc = desc("tunnels_open",
		"Open tunnels (upgraded connections: WebSockets) to the upstream's backends.", "upstream")
	eligibleCountDesc = desc("upstream_eligible_backends",
		"Backends new requests are spread over.", "upstream")
	eligibleDesc = desc("backend_eligible",
		"1 when the balancer may pick the backend for a new request, else 0.", "upstream", "backend")
	inFlightDesc = desc("backend_in_flight",
		"Requests in flight on the backend.", "upstream", "backend")
	weightDesc = desc("backend_weight",
		"Configured weight of the backend (admin override included).", "upstream", "backend")
	failuresDesc = desc("backend_failures_total",
		"Attempts that ended in a gateway error (connect failure, reset, timeout, 502, 503, 504).", "upstream", "backend")
	transitionsDesc = desc("backend_transitions_total",
		"Times a reason to keep the backend out of rotation was set (reason) or cleared (reason with a _cleared suffix).",
		"upstream", "backend", "reason")
)

// poolCollector reads the balancer's and the data path's atomics at scrape
// time.
type poolCollector struct {
	m         *Metrics
	upstreams func() []*balancer.Pool
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{requestsDesc, durationDesc, retriesDesc, hedgesDesc, unavailableDesc, tunnelsDesc, eligibleCountDesc,
		eligibleDesc, inFlightDesc, weightDesc, failuresDesc, transitionsDesc} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	if c.upstreams == nil {
		return
	}
	seen := map[string]bool{}
	for _, p := range c.upstreams() {
		if p == nil || seen[p.Name()] {
			continue // duplicate names would make the whole scrape fail
		}
		seen[p.Name()] = true
		st, ok := c.m.stats.Load(p)
		if !ok {
			st = new(UpstreamStats) // nothing counted yet: zeros
		}
		collectPool(ch, p, st.(*UpstreamStats))
	}
}

func collectPool(ch chan<- prometheus.Metric, p *balancer.Pool, st *UpstreamStats) {
	up := p.Name()
	count, sum, cum := st.Latency.Read()
	buckets := make(map[float64]uint64, len(cum))
	for i, le := range LatencyBuckets {
		buckets[le] = cum[i]
	}
	ch <- prometheus.MustNewConstHistogram(durationDesc, count, sum, buckets, up)
	ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(st.Retries.Load()), up)
	ch <- prometheus.MustNewConstMetric(hedgesDesc, prometheus.CounterValue, float64(st.Hedges.Load()), up)
	ch <- prometheus.MustNewConstMetric(unavailableDesc, prometheus.CounterValue, float64(st.Unavailable.Load()), up)
	ch <- prometheus.MustNewConstMetric(tunnelsDesc, prometheus.GaugeValue, float64(st.Tunnels.Load()), up)

	s := p.Snapshot()
	ch <- prometheus.MustNewConstMetric(eligibleCountDesc, prometheus.GaugeValue, float64(s.EligibleCount()), up)
	for i, b := range s.Members {
		addr := b.Address()
		ch <- prometheus.MustNewConstMetric(eligibleDesc, prometheus.GaugeValue, boolFloat(s.Eligible(i)), up, addr)
		ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(b.InFlight()), up, addr)
		ch <- prometheus.MustNewConstMetric(weightDesc, prometheus.GaugeValue, float64(b.Weight()), up, addr)
		ch <- prometheus.MustNewConstMetric(failuresDesc, prometheus.CounterValue, float64(b.Failures()), up, addr)
		st.Codes(b, func(code int, n uint64) {
			ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(n), up, addr, strconv.Itoa(code))
		})
		b.Transitions(func(r balancer.Reason, on bool, n uint64) {
			ch <- prometheus.MustNewConstMetric(transitionsDesc, prometheus.CounterValue, float64(n), up, addr, TransitionReason(r, on))
		})
	}
	st.dropRemoved()
}

// TransitionReason is the reason label of kelpie_backend_transitions_total:
// the reason's name ("unhealthy", "ejected", "breaker_open", "drain",
// "critical", "removed", "slow", "errors") when it was set, with "_cleared" appended when it
// was cleared.
func TransitionReason(r balancer.Reason, on bool) string {
	if on {
		return r.String()
	}
	return r.String() + "_cleared"
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
