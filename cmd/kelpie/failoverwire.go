package main

// Wiring of the failover features into the admin API: drills (counts,
// detection bound) and heartbeats.

import (
	"fmt"
	"time"

	"github.com/kelpie-lb/kelpie/admin"
	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/config"
	"github.com/kelpie-lb/kelpie/health"
)

// upstreamCounts gives a drill the upstream's request figures.
func (a *app) upstreamCounts(p *balancer.Pool) admin.UpstreamCounts {
	s := a.metrics.Upstream(p)
	n, _, _ := s.Latency.Read()
	return admin.UpstreamCounts{Requests: n, Failed: s.Failed.Load(), Retries: s.Retries.Load()}
}

// detectionBound is how soon the upstream's active probes must take a failed
// backend out of rotation: fall probes, each up to its timeout and an
// interval apart, plus one interval of slack for a busy host. Without active probing detection depends on traffic
// (passive ejection, breaker) and kelpie has no bound of its own: 0.
func (a *app) detectionBound(p *balancer.Pool) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, u := range a.cfg.Upstreams {
		if u.Name == p.Name() {
			return activeBound(u.Health.Active)
		}
	}
	return 0
}

func activeBound(ac *config.Active) time.Duration {
	if ac == nil {
		return 0
	}
	return time.Duration(ac.Fall)*(ac.Interval+ac.Timeout) + ac.Interval
}

// heartbeat records a heartbeat of b with its upstream's checker.
func (a *app) heartbeat(p *balancer.Pool, b *balancer.Backend) error {
	a.mu.Lock()
	u := a.upstreams[p.Name()]
	a.mu.Unlock()
	if u == nil || u.pool != p {
		return fmt.Errorf("upstream %q is no longer configured: %w", p.Name(), health.ErrNoHeartbeat)
	}
	return u.checker.Beat(b)
}
