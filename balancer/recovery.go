package balancer

import "time"

// SlowStart returns the pool's slow-start ramp (0 when off): a backend back
// in rotation reaches full weight this long after EligibleSince.
func (p *Pool) SlowStart() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opts.SlowStart
}

// EligibleSince is when the backend last came back into rotation, as slow
// start counts it; zero when slow start is off or it has been in rotation
// from the start.
func (s State) EligibleSince() time.Time {
	if s.eligibleSince == 0 {
		return time.Time{}
	}
	return time.Unix(0, s.eligibleSince)
}
