package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kelpie-lb/kelpie/balancer"
)

// IncidentBuckets are the upper bounds, in seconds, of the detection and
// recovery histograms: from a probe interval to a long ejection.
var IncidentBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600}

// incidentMetrics are the real-incident timings: time to detect, time to
// recover, failovers to the backup tier and back.
type incidentMetrics struct {
	detection *prometheus.HistogramVec
	recovery  *prometheus.HistogramVec
	failovers *prometheus.CounterVec
}

func newIncidentMetrics(reg *prometheus.Registry) *incidentMetrics {
	im := &incidentMetrics{
		detection: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kelpie_backend_detection_seconds",
			Help:    "Time to detect: from the first failure seen on a backend (failed probe or gateway error) to the backend out of rotation, by mechanism (active, passive, breaker).",
			Buckets: IncidentBuckets,
		}, []string{"upstream", "mechanism"}),
		recovery: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kelpie_backend_recovery_seconds",
			Help:    "Time to recover: from a backend out of rotation for a health reason to back in full rotation (slow start included).",
			Buckets: IncidentBuckets,
		}, []string{"upstream"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kelpie_upstream_failovers_total",
			Help: "Switches of an upstream's traffic to its backup tier (to=backup) and back (to=primary).",
		}, []string{"upstream", "to"}),
	}
	reg.MustRegister(im.detection, im.recovery, im.failovers)
	return im
}

// Incidents returns the observer that records the upstream's incident
// timings; pass it as balancer.Options.Incidents.
func (m *Metrics) Incidents(upstream string) balancer.IncidentObserver {
	return incidentObserver{m.incidents, upstream}
}

type incidentObserver struct {
	m        *incidentMetrics
	upstream string
}

func (o incidentObserver) Detected(_ *balancer.Backend, mechanism string, d time.Duration) {
	o.m.detection.WithLabelValues(o.upstream, mechanism).Observe(d.Seconds())
}

func (o incidentObserver) Recovered(_ *balancer.Backend, d time.Duration) {
	o.m.recovery.WithLabelValues(o.upstream).Observe(d.Seconds())
}

func (o incidentObserver) Failover(to balancer.Tier) {
	o.m.failovers.WithLabelValues(o.upstream, to.String()).Inc()
}
