package admin

import (
	"context"
	"strings"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// runDrill injects the fault, watches kelpie's own detection take the
// backend out of rotation, ends the fault after pl.dur and watches it come
// back to full weight, checking the guards on every poll: client-visible
// errors past the cap, or another backend failing meanwhile, abort the drill
// and end the fault at once. The fault is removed whatever happens.
func (s *Server) runDrill(ctx context.Context, d *drill, p *balancer.Pool, b *balancer.Backend, pl drillPlan) {
	counts := func() UpstreamCounts {
		if s.opts.Counts == nil {
			return UpstreamCounts{}
		}
		return s.opts.Counts(p)
	}
	base := counts()
	var watch []*balancer.Backend // the others in rotation at the start
	for _, m := range p.Snapshot().Members {
		if m != b && m.Down() == 0 {
			watch = append(watch, m)
		}
	}
	f := pl.fault
	start := time.Now()
	d.mu.Lock()
	d.r.Started = start
	d.mu.Unlock()
	b.SetFault(&f)
	faultOn := true
	defer b.SetFault(nil)
	d.note(start, "fault %s injected on %s for %s; detection bound %s", f, b.Address(), pl.dur, pl.detect)

	tick := time.NewTicker(drillPoll)
	defer tick.Stop()
	var detectedAt, faultEnd, backAt time.Time
	outcome, why := "", ""
	for outcome == "" {
		select {
		case <-ctx.Done():
			outcome, why = DrillAborted, "kelpie is shutting down"
		case w := <-d.abort:
			outcome, why = DrillAborted, w
		case <-tick.C:
		}
		now := time.Now()
		c := counts()
		failed := c.Failed - base.Failed
		d.mu.Lock()
		d.r.ClientErrors, d.r.Retries, d.r.Requests = failed, c.Retries-base.Retries, c.Requests-base.Requests
		d.mu.Unlock()
		if outcome != "" {
			break
		}
		if failed > uint64(pl.maxCErrs) {
			outcome, why = DrillAborted, "client-visible errors ("+itoa(failed)+") passed max_client_errors ("+itoa(uint64(pl.maxCErrs))+")"
			break
		}
		if m := failedMeanwhile(watch); m != nil {
			outcome, why = DrillAborted, "another backend failed meanwhile: "+m.Address()+" is out ("+m.Down().String()+")"
			break
		}
		down := b.Down()
		if detectedAt.IsZero() && down&healthReasons != 0 {
			detectedAt = now
			by := detectedBy(down)
			d.mu.Lock()
			d.r.DetectedAfterMs, d.r.DetectedBy = msPtr(now.Sub(start)), by
			d.mu.Unlock()
			d.note(now, "detected by %s: out of rotation (%s)", by, down)
		}
		if faultOn {
			if now.Sub(start) < pl.dur {
				continue
			}
			b.SetFault(nil)
			faultOn, faultEnd = false, now
			d.note(now, "fault ended")
			if detectedAt.IsZero() {
				outcome, why = DrillFailed, "the fault was not detected while it lasted ("+pl.dur.String()+")"
				break
			}
		}
		if down != 0 {
			backAt = time.Time{}
			if now.Sub(faultEnd) > pl.recover {
				outcome, why = DrillFailed, "not back in rotation within recover_within ("+pl.recover.String()+"): "+down.String()
			}
			continue
		}
		if backAt.IsZero() {
			backAt = now
			d.note(now, "back in rotation")
		}
		full := backAt
		if ss := p.SlowStart(); ss > 0 {
			if es := b.State().EligibleSince(); !es.IsZero() {
				full = es.Add(ss)
			}
		}
		if now.Before(full) {
			continue
		}
		d.mu.Lock()
		d.r.RecoveredAfterMs = msPtr(max(full.Sub(faultEnd), 0))
		d.mu.Unlock()
		if !full.Equal(backAt) {
			d.note(now, "full weight after slow start")
		}
		outcome = DrillSucceeded
		var fails []string
		if after := detectedAt.Sub(start); after > pl.detect {
			fails = append(fails, "detected after "+after.Round(time.Millisecond).String()+", beyond the bound "+pl.detect.String())
		}
		if failed > 0 {
			fails = append(fails, itoa(failed)+" client-visible errors")
		}
		if len(fails) > 0 {
			outcome, why = DrillFailed, strings.Join(fails, "; ")
		}
	}
	if faultOn {
		b.SetFault(nil)
		d.note(time.Now(), "fault ended")
	}
	end := time.Now()
	if why != "" {
		d.note(end, "%s: %s", outcome, why)
	} else {
		d.note(end, "%s", outcome)
	}
	d.mu.Lock()
	d.r.Outcome, d.r.Ended = outcome, &end
	d.mu.Unlock()
	s.log.Warn("drill ended", "id", d.r.ID, "upstream", p.Name(), "backend", b.Address(), "outcome", outcome, "why", why)
}

// failedMeanwhile returns a backend of watch that kelpie's detection or
// discovery has taken out of rotation, or nil.
func failedMeanwhile(watch []*balancer.Backend) *balancer.Backend {
	for _, m := range watch {
		if m.Down()&(healthReasons|balancer.ReasonCritical|balancer.ReasonRemoved) != 0 {
			return m
		}
	}
	return nil
}
