package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// ErrNoHeartbeat is returned by Beat for an upstream without heartbeat
// checks.
var ErrNoHeartbeat = errors.New("heartbeat checks are not configured for this upstream (health.heartbeat)")

// HeartbeatOptions configures heartbeat checks, for backends that report
// their own liveness (or have an agent do it) instead of being probed: each
// calls Beat at least every TTL. A backend that misses it leaves rotation
// (balancer.ReasonHeartbeatMissed) until Rise beats in a row, each within
// TTL of the last, bring it back. A backend gets one TTL from when the
// checker first sees it before its first beat is due.
type HeartbeatOptions struct {
	// TTL is how long a backend may go without a beat. Required.
	TTL time.Duration
	// Rise is how many consecutive beats bring a missed backend back.
	// Default 2.
	Rise int
}

// beats is the heartbeat state of one backend. Beat writes it; the
// heartbeat loop reads it and is the only writer of State.HeartbeatMissed.
type beats struct {
	last   atomic.Int64 // unix nanos of the last beat (or of the first sighting)
	streak atomic.Int32 // beats in a row, each within TTL of the previous one
}

// heartbeats holds the beats of every backend, by *Backend.
type heartbeats struct{ m sync.Map }

func (h *heartbeats) get(b *balancer.Backend, now time.Time) *beats {
	if s, ok := h.m.Load(b); ok {
		return s.(*beats)
	}
	s := &beats{}
	s.last.Store(now.UnixNano())
	v, _ := h.m.LoadOrStore(b, s)
	return v.(*beats)
}

// Beat records a heartbeat of b. It fails with ErrNoHeartbeat when heartbeat
// checks are off.
func (c *Checker) Beat(b *balancer.Backend) error {
	o := c.opts.Load().Heartbeat
	if o == nil {
		return ErrNoHeartbeat
	}
	now := time.Now()
	s := c.beats.get(b, now)
	if now.UnixNano()-s.last.Swap(now.UnixNano()) > int64(o.TTL) {
		s.streak.Store(1)
	} else {
		s.streak.Add(1)
	}
	return nil
}

// heartbeatLoop checks every member's last beat against the TTL until ctx
// is done. With heartbeat checks off it clears every miss.
func (c *Checker) heartbeatLoop(ctx context.Context, pool Pool) {
	for {
		o := c.opts.Load().Heartbeat
		every := time.Second
		if o != nil {
			every = min(max(o.TTL/10, 10*time.Millisecond), 250*time.Millisecond)
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		c.checkHeartbeats(pool, o, time.Now())
	}
}

// checkHeartbeats is one pass of the heartbeat loop at now.
func (c *Checker) checkHeartbeats(pool Pool, o *HeartbeatOptions, now time.Time) {
	for _, b := range pool.Snapshot().Members {
		missed := b.State().HeartbeatMissed
		if o == nil {
			if missed {
				pool.Update(b, "heartbeat checks disabled", func(s *balancer.State) { s.HeartbeatMissed = false })
			}
			continue
		}
		s := c.beats.get(b, now)
		age := time.Duration(now.UnixNano() - s.last.Load())
		switch {
		case !missed && age > o.TTL:
			s.streak.Store(0)
			pool.Update(b, fmt.Sprintf("no heartbeat for %s (ttl %s)", age.Round(time.Millisecond), o.TTL),
				func(s *balancer.State) { s.HeartbeatMissed = true })
		case missed && age <= o.TTL && int(s.streak.Load()) >= o.Rise:
			pool.Update(b, plural(o.Rise, "heartbeat arrived", "heartbeats in a row arrived"),
				func(s *balancer.State) { s.HeartbeatMissed = false })
		}
	}
	c.beats.m.Range(func(k, _ any) bool { // forget backends that left
		if k.(*balancer.Backend).State().Removed {
			c.beats.m.Delete(k)
		}
		return true
	})
}
