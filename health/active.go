package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// probeTask is the probe loop of one backend. Its streak outlives the loop
// across a Reconfigure (the old loop has exited before the new one starts).
// The verdict itself lives in the backend's State.Health alone, which this
// loop is the only writer of while probing is on.
type probeTask struct {
	streak int // consecutive results against the verdict (probeState.Streak)
	cancel context.CancelFunc
	done   chan struct{}
}

func (t *probeTask) stop() {
	if t.cancel != nil {
		t.cancel()
		<-t.done
		t.cancel = nil
	}
}

// reconcileProbes starts a probe loop for each member without one and stops
// those of backends that left. With active probing off, it stops them all
// and resets every backend's health to unknown.
func (c *Checker) reconcileProbes(ctx context.Context, pool Pool, tasks map[*balancer.Backend]*probeTask) {
	members := pool.Snapshot().Members
	a := c.opts.Load().Active
	if a == nil {
		for b, t := range tasks {
			t.stop()
			delete(tasks, b)
		}
		for _, b := range members {
			if b.State().Health != balancer.HealthUnknown {
				pool.Update(b, "active probing disabled", func(s *balancer.State) { s.Health = balancer.HealthUnknown })
			}
		}
		return
	}
	present := make(map[*balancer.Backend]bool, len(members))
	for _, b := range members {
		present[b] = true
		t := tasks[b]
		if t == nil {
			t = &probeTask{}
			tasks[b] = t
		}
		if t.cancel == nil {
			pctx, cancel := context.WithCancel(ctx)
			t.cancel, t.done = cancel, make(chan struct{})
			go c.probeLoop(pctx, pool, b, t, a)
		}
	}
	for b, t := range tasks {
		if !present[b] {
			t.stop()
			delete(tasks, b)
		}
	}
}

// probeLoop probes b at once, then every interval less jitter (or the
// unhealthy interval while it is unhealthy), counted from the start of the
// previous probe, and publishes each change of verdict.
func (c *Checker) probeLoop(ctx context.Context, pool Pool, b *balancer.Backend, t *probeTask, a *ActiveOptions) {
	defer close(t.done)
	probe := a.Probe
	switch {
	case probe == nil && len(a.Command) > 0:
		probe = c.execProbe(a, b)
	case probe == nil:
		probe = newProber(a).probe
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		began := time.Now()
		pctx, cancel := context.WithTimeout(ctx, a.Timeout)
		err := probeFaulted(pctx, probe, b, a)
		cancel()
		if ctx.Err() != nil {
			return // stopped mid-probe: the result says nothing about b
		}
		c.apply(pool, b, t, err, a)
		c.probed(pool, b, err == nil, a.Rise)
		every := a.Interval
		if b.State().Health == balancer.HealthUnhealthy {
			every = a.UnhealthyInterval
		}
		// Probes start every interval, whatever they took, so fall x
		// interval (+ one timeout) bounds detection even when probes time out.
		timer.Reset(max(c.jitter(every, a.Jitter, -1)-time.Since(began), 0))
	}
}

// apply folds one probe result into t's state and publishes a change.
func (c *Checker) apply(pool Pool, b *balancer.Backend, t *probeTask, err error, a *ActiveOptions) {
	warn := errors.Is(err, ErrCheckWarning)
	if warn {
		err = nil // a warning passes, degraded
	}
	if b.State().Degraded != warn {
		detail := "check passes again"
		if warn {
			detail = "check warns: eligible at reduced weight"
		}
		pool.Update(b, detail, func(s *balancer.State) { s.Degraded = warn })
		c.log().Info("backend check", "backend", b.Address(), "degraded", warn, "detail", detail)
	}
	b.NoteProbe(err == nil) // starts or stops the detection clock
	prev := b.State().Health
	next, changed := step(probeState{Health: prev, Streak: t.streak}, err == nil, a.Rise, a.Fall)
	t.streak = next.Streak
	if !changed {
		return
	}
	healthy := next.Health == balancer.HealthHealthy
	var detail string
	switch {
	case prev == balancer.HealthUnknown && healthy:
		detail = "first probe passed"
	case healthy:
		detail = plural(a.Rise, "probe passed", "consecutive probes passed")
	default:
		detail = fmt.Sprintf("%s: %v", plural(a.Fall, "probe failed", "consecutive probes failed"), err)
	}
	if !pool.Update(b, detail, func(s *balancer.State) { s.Health = next.Health }) {
		// No reason changed (unknown -> healthy): the pool logged nothing.
		c.log().Info("backend health", "backend", b.Address(), "health", next.Health.String(), "detail", detail)
	}
}
