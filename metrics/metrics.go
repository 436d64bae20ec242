// Package metrics exports kelpie's Prometheus metrics on a registry of its
// own (never the global one). Pool and backend figures are not recorded
// through client_golang on the data path: the data path counts into atomics
// (balancer.Backend's in-flight, request and failure counters; each
// upstream's UpstreamStats for latency, retries, 503s and status codes),
// and a custom collector reads those at scrape time, so serving traffic
// costs nothing extra.
//
// Metrics (all prefixed kelpie_):
//
//	requests_total{upstream,backend,code}          counter   finished attempts by HTTP status (kelpie's own 502/504 included)
//	request_duration_seconds{upstream}             histogram whole client requests, all attempts
//	retries_total{upstream}                        counter   extra attempts, each on another backend
//	hedges_total{upstream}                         counter   hedged attempts (retries.hedge)
//	upstream_unavailable_total{upstream}           counter   requests answered 503: no eligible backend
//	tunnels_open{upstream}                         gauge     open tunnels (WebSockets) to the upstream
//	upstream_eligible_backends{upstream}           gauge     backends new requests are spread over
//	backend_eligible{upstream,backend}             gauge     1 when the balancer may pick the backend
//	backend_in_flight{upstream,backend}            gauge     requests in flight
//	backend_weight{upstream,backend}               gauge     configured weight (admin override included)
//	backend_failures_total{upstream,backend}       counter   attempts that ended in a gateway error
//	backend_transitions_total{upstream,backend,reason}  counter  rotation changes; reason is what was set
//	                                               (unhealthy, ejected, breaker_open, drain, critical, removed, slow, errors)
//	                                               or cleared (the same with a "_cleared" suffix)
//	config_reloads_total{result}                   counter   result is "success" or "error"
//	consul_last_sync_age_seconds{service}          gauge     time since a Consul watch last synced
//	backend_detection_seconds{upstream,mechanism}  histogram first failure seen to out of rotation (active, passive, breaker)
//	backend_recovery_seconds{upstream}             histogram out of rotation (health) to back in full rotation
//	upstream_failovers_total{upstream,to}          counter   traffic moved to the backup tier (to=backup) or back (to=primary)
//
// plus the standard go_* and process_* collectors.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kelpie-lb/kelpie/balancer"
)

// Reload results, the values of config_reloads_total's result label.
const (
	ReloadSuccess = "success"
	ReloadFailure = "error"
)

// Metrics is kelpie's metric registry. Safe for concurrent use.
type Metrics struct {
	// ConfigReloads counts config reloads by result (ReloadSuccess or
	// ReloadFailure); the code that reloads increments it.
	ConfigReloads *prometheus.CounterVec

	reg *prometheus.Registry

	mu     sync.Mutex
	consul func() map[string]time.Duration

	stats     sync.Map // *balancer.Pool -> *UpstreamStats
	incidents *incidentMetrics
}

// New returns a registry with the Go and process collectors and a collector
// that reads the pools upstreams returns at each scrape. upstreams may be
// nil (no pool metrics).
func New(upstreams func() []*balancer.Pool) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.ConfigReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kelpie_config_reloads_total",
		Help: "Config reloads by result (success or error).",
	}, []string{"result"})
	// Both series exist from the start, so alerts on failure see a 0.
	m.ConfigReloads.WithLabelValues(ReloadSuccess)
	m.ConfigReloads.WithLabelValues(ReloadFailure)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.ConfigReloads,
		&poolCollector{m: m, upstreams: upstreams},
		&consulCollector{m: m},
	)
	m.incidents = newIncidentMetrics(m.reg)
	return m
}

// Upstream returns the request figures of pool's upstream, for the data
// path to count into, making them at the first call; the same pool always
// gets the same UpstreamStats, so they survive config reloads that keep the
// pool. Call Forget when the pool is dropped. Safe for concurrent use.
func (m *Metrics) Upstream(pool *balancer.Pool) *UpstreamStats {
	if s, ok := m.stats.Load(pool); ok {
		return s.(*UpstreamStats)
	}
	s, _ := m.stats.LoadOrStore(pool, new(UpstreamStats))
	return s.(*UpstreamStats)
}

// Forget drops the figures of a pool that is no longer used (a reload
// removed its upstream).
func (m *Metrics) Forget(pool *balancer.Pool) { m.stats.Delete(pool) }

// Registry returns the registry, for registering more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format (or
// OpenMetrics when the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	})
}

// SetConsulStatus installs the function read at each scrape for
// kelpie_consul_last_sync_age_seconds: time since the last successful sync,
// per Consul service. nil removes it.
func (m *Metrics) SetConsulStatus(f func() map[string]time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.consul = f
}

func (m *Metrics) consulStatus() func() map[string]time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.consul
}

var consulAgeDesc = prometheus.NewDesc("kelpie_consul_last_sync_age_seconds",
	"Seconds since the Consul watch of a service last synced successfully.", []string{"service"}, nil)

type consulCollector struct{ m *Metrics }

func (c *consulCollector) Describe(ch chan<- *prometheus.Desc) { ch <- consulAgeDesc }

func (c *consulCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.m.consulStatus()
	if f == nil {
		return
	}
	for svc, age := range f() {
		ch <- prometheus.MustNewConstMetric(consulAgeDesc, prometheus.GaugeValue, age.Seconds(), svc)
	}
}
