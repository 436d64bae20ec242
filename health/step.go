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
// A backend nothing is known about yet (HealthUnknown, eligible) takes the
// first result as its verdict: one pass makes it healthy, one failure
// unhealthy. Probing starts at once, so a backend that is down when kelpie
// starts or when it joins leaves rotation after one probe instead of
// fall x interval of failed requests (NGINX Plus "mandatory", Envoy
// ignore_new_hosts_until_first_hc); hysteresis applies from then on.
//
// changed reports whether Health changed.
func step(s probeState, ok bool, rise, fall int) (next probeState, changed bool) {
	switch {
	case s.Health == balancer.HealthUnknown:
		if ok {
			return probeState{Health: balancer.HealthHealthy}, true
		}
		return probeState{Health: balancer.HealthUnhealthy}, true
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
