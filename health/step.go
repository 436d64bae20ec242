package health

import "github.com/kelpie-lb/kelpie/balancer"

// probeState is what active probing knows about one backend: its verdict
// and how many consecutive probe results in a row have contradicted it.
type probeState struct {
	Health balancer.Health
	Streak int // consecutive results against Health; reset by one agreeing result
}

// step folds one probe result into s with rise/fall hysteresis (HAProxy's
// rise/fall): a healthy backend turns unhealthy after fall consecutive
// failures, an unhealthy one healthy after rise consecutive passes, and one
// agreeing result resets the count, so fail, pass, fail never trips fall=2.
//
// A backend nothing is known about yet (HealthUnknown) is eligible and is
// given the benefit of the doubt, as HAProxy and Envoy do by default: one
// pass makes it healthy, and it takes fall consecutive failures, like a
// healthy one, to make it unhealthy. Probing starts at once, so a backend
// that is down when it joins leaves rotation after fall-1 intervals (passive
// detection and retries cover the gap); a single slow first probe, as when
// kelpie and its backends start together on a busy host, does not take a
// backend (or a whole pool) out of rotation.
//
// changed reports whether Health changed.
func step(s probeState, ok bool, rise, fall int) (next probeState, changed bool) {
	switch {
	case s.Health == balancer.HealthUnknown && ok:
		return probeState{Health: balancer.HealthHealthy}, true
	case s.Health == balancer.HealthUnknown:
		if s.Streak+1 >= fall {
			return probeState{Health: balancer.HealthUnhealthy}, true
		}
		return probeState{Health: s.Health, Streak: s.Streak + 1}, false
	case ok == (s.Health == balancer.HealthHealthy):
		return probeState{Health: s.Health}, false
	}
	need := fall
	flip := balancer.HealthUnhealthy
	if ok {
		need, flip = rise, balancer.HealthHealthy
	}
	if s.Streak+1 >= need {
		return probeState{Health: flip}, true
	}
	return probeState{Health: s.Health, Streak: s.Streak + 1}, false
}
