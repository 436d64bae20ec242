package metrics

import "github.com/prometheus/client_golang/prometheus"

// HA holds the figures of an active-passive group member:
//
//	ha_leader                   gauge    1 while this instance leads, else 0
//	ha_transitions_total{to}    counter  role changes, by the role entered (leader, standby, fenced)
//	ha_fencing_token            gauge    the lock index of the current or last leadership
//	fleet_drains                gauge    fleet-wide drains known from Consul
type HA struct {
	Leader       prometheus.Gauge
	Transitions  *prometheus.CounterVec
	FencingToken prometheus.Gauge
	FleetDrains  prometheus.Gauge
}

// NewHA registers the HA figures on m's registry. Call it once.
func (m *Metrics) NewHA() *HA {
	h := &HA{
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kelpie_ha_leader", Help: "1 while this instance is the HA group's leader, else 0.",
		}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kelpie_ha_transitions_total", Help: "HA role changes, by the role entered.",
		}, []string{"to"}),
		FencingToken: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kelpie_ha_fencing_token", Help: "Lock index of this instance's current or last leadership (the fencing token).",
		}),
		FleetDrains: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kelpie_fleet_drains", Help: "Fleet-wide drains known from Consul.",
		}),
	}
	for _, to := range []string{"leader", "standby", "fenced"} {
		h.Transitions.WithLabelValues(to) // from 0, so alerts see the series
	}
	m.reg.MustRegister(h.Leader, h.Transitions, h.FencingToken, h.FleetDrains)
	return h
}
