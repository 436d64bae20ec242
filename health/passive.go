package health

import (
	"fmt"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// ejectKind is what a passive ejection is for. Each kind sets its own State
// field, so the reason (ejected, slow, errors) says which detector acted;
// all kinds share the ejection count, growth, cap and guards.
type ejectKind uint8

const (
	ejectGateway ejectKind = iota // consecutive gateway errors: State.Ejected
	ejectSlow                     // latency outlier: State.Slow
	ejectErrors                   // success rate or failure percentage: State.Errors
)

// outReasons are the reasons a passive ejection sets.
const outReasons = balancer.ReasonEjected | balancer.ReasonSlow | balancer.ReasonErrors

func (k ejectKind) set(s *balancer.State, on bool) {
	switch k {
	case ejectSlow:
		s.Slow = on
	case ejectErrors:
		s.Errors = on
	default:
		s.Ejected = on
	}
}

// off reports whether the detector behind k is turned off in o.
func (k ejectKind) off(o PassiveOptions) bool {
	switch k {
	case ejectSlow:
		return o.Latency == nil
	case ejectErrors:
		return o.SuccessRate == nil && o.FailurePercentage == nil
	}
	return o.ConsecutiveFailures <= 0
}

// eject takes g's backend out of rotation after n consecutive gateway
// errors (the last one r), unless the caps forbid it (see ejectLocked).
func (c *Checker) eject(g *guard, n int, r balancer.Result) {
	pool := c.currentPool()
	if pool == nil {
		return // not running yet
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	why := plural(n, "consecutive gateway error", "consecutive gateway errors")
	if g.probation.Load() {
		why = "failure right after the previous ejection ended"
	}
	c.ejectLocked(pool, g, ejectGateway, fmt.Sprintf("%s (last: %s)", why, r), n)
}

// ejectLocked takes g's backend out of rotation for kind, unless it is
// ejected already or the caps forbid it: no more than MaxEjectedPercent of
// the pool's non-drained members ejected at once, and never the last
// backend that has no reason to be down. A refused ejection is retried at
// the next failure or detector run. Called with c.mu held.
func (c *Checker) ejectLocked(pool Pool, g *guard, kind ejectKind, why string, failures int) bool {
	o := c.opts.Load().Passive
	b := g.b
	if b.Down()&outReasons != 0 {
		return false
	}
	total, ejected, others := 0, 0, 0
	for _, m := range pool.Snapshot().Members {
		d := m.Down()
		if d&(balancer.ReasonDrain|balancer.ReasonRemoved) != 0 {
			continue
		}
		total++
		if d&outReasons != 0 {
			ejected++
		}
		if m != b && d == 0 {
			others++
		}
	}
	if others == 0 || (ejected+1)*100 > o.MaxEjectedPercent*total {
		if !g.capLogged {
			g.capLogged = true
			c.log().Warn("backend not ejected: ejection caps reached", "backend", b.Address(),
				"why", why, "failures", failures, "ejected", ejected, "members", total,
				"max_ejected_percent", o.MaxEjectedPercent, "other_eligible", others)
		}
		return false
	}
	g.capLogged = false
	now := time.Now()
	g.ejections++
	d := min(o.Ejection*time.Duration(g.ejections), o.MaxEjection)
	d = c.jitter(d, o.Jitter, +1)
	g.ejectedAt, g.until, g.lastChange, g.kind, g.passes = now, now.Add(d), now, kind, 0
	g.probation.Store(false)
	g.fails.Store(0)
	pool.Update(b, fmt.Sprintf("%s; ejection #%d for %s", why, g.ejections, d.Round(time.Millisecond)),
		func(s *balancer.State) { kind.set(s, true) })
	return true
}

// probed learns from one active probe result: a run of rise passes since an
// ejection for gateway errors ends it (unless KeepEjectedOnProbe), so a
// backend that is back is back within rise x interval, not after the
// ejection time. The backend is then on probation like after any ejection.
func (c *Checker) probed(pool Pool, b *balancer.Backend, pass bool, rise int) {
	g := guardOf(b)
	if g == nil || c.opts.Load().Passive.KeepEjectedOnProbe {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if b.Down()&balancer.ReasonEjected == 0 || g.kind != ejectGateway {
		return
	}
	if !pass {
		g.passes = 0
		return
	}
	if g.passes++; g.passes < rise {
		return
	}
	c.endEjectionLocked(pool, g, time.Now(), fmt.Sprintf("%s since ejection #%d (%s ago); one more failure re-ejects",
		plural(rise, "probe passed", "consecutive probes passed"), g.ejections, time.Since(g.ejectedAt).Round(time.Millisecond)), true)
}

// endEjectionLocked puts g's backend back after a passive ejection, on
// probation (the next gateway error re-ejects) when probation is set.
// Called with c.mu held.
func (c *Checker) endEjectionLocked(pool Pool, g *guard, now time.Time, detail string, probation bool) {
	g.fails.Store(0)
	g.lastChange = now
	g.probation.Store(probation)
	g.passes = 0
	pool.Update(g.b, detail, func(s *balancer.State) { s.Ejected, s.Slow, s.Errors = false, false, false })
}

// sweep ends ejections that are due and lets ejection counts decay: each
// Ejection period a backend spends in rotation without a new ejection
// lowers its multiplier by one (as Envoy does). With passive detection
// turned off, every ejection ends now.
func (c *Checker) sweep(pool Pool) {
	o := c.opts.Load().Passive
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range pool.Snapshot().Members {
		g := guardOf(b)
		if g == nil {
			continue
		}
		if b.Down()&outReasons != 0 {
			off := g.kind.off(o)
			if !off && now.Before(g.until) {
				continue
			}
			detail := "passive detection disabled"
			if !off {
				detail = fmt.Sprintf("ejection #%d over after %s", g.ejections, now.Sub(g.ejectedAt).Round(time.Millisecond))
				if g.kind == ejectGateway {
					detail += "; one more failure re-ejects"
				}
			}
			c.endEjectionLocked(pool, g, now, detail, !off && g.kind == ejectGateway)
			continue
		}
		if g.fails.Load() == 0 {
			g.capLogged = false // a later refusal is a new episode
		}
		if g.ejections > 0 && !g.probation.Load() && now.Sub(g.lastChange) >= o.Ejection {
			g.ejections--
			g.lastChange = now
		}
	}
	c.detectOutliers(pool, o, now)
}
