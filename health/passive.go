package health

import (
	"fmt"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// eject takes g's backend out of rotation after n consecutive gateway
// errors (the last one r), unless the caps forbid it: no more than
// MaxEjectedPercent of the pool's non-drained members ejected at once, and
// never the last backend that has no reason to be down. A refused ejection
// is retried at the next failure.
func (c *Checker) eject(g *guard, n int, r balancer.Result) {
	pool := c.currentPool()
	if pool == nil {
		return // not running yet
	}
	o := c.opts.Load().Passive
	c.mu.Lock()
	defer c.mu.Unlock()
	b := g.b
	if b.Down()&balancer.ReasonEjected != 0 {
		return
	}
	total, ejected, others := 0, 0, 0
	for _, m := range pool.Snapshot().Members {
		d := m.Down()
		if d&(balancer.ReasonDrain|balancer.ReasonRemoved) != 0 {
			continue
		}
		total++
		if d&balancer.ReasonEjected != 0 {
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
				"failures", n, "ejected", ejected, "members", total, "max_ejected_percent", o.MaxEjectedPercent,
				"other_eligible", others)
		}
		return
	}
	g.capLogged = false
	now := time.Now()
	g.ejections++
	d := min(o.Ejection*time.Duration(g.ejections), o.MaxEjection)
	d = c.jitter(d, o.Jitter, +1)
	g.ejectedAt, g.until, g.lastChange = now, now.Add(d), now
	why := plural(n, "consecutive gateway error", "consecutive gateway errors")
	if g.probation.Load() {
		why = "failure right after the previous ejection ended"
	}
	g.probation.Store(false)
	g.fails.Store(0)
	pool.Update(b, fmt.Sprintf("%s (last: %s); ejection #%d for %s", why, r, g.ejections, d.Round(time.Millisecond)),
		func(s *balancer.State) { s.Ejected = true })
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
		if b.Down()&balancer.ReasonEjected != 0 {
			off := o.ConsecutiveFailures <= 0
			if !off && now.Before(g.until) {
				continue
			}
			g.fails.Store(0)
			g.lastChange = now
			detail := "passive detection disabled"
			if !off {
				g.probation.Store(true)
				detail = fmt.Sprintf("ejection #%d over after %s; one more failure re-ejects",
					g.ejections, now.Sub(g.ejectedAt).Round(time.Millisecond))
			}
			pool.Update(b, detail, func(s *balancer.State) { s.Ejected = false })
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
}
