// Package health keeps kelpie's pools current: active probes (HTTP GET or
// TCP connect with rise/fall hysteresis), passive outlier detection from
// real traffic (consecutive gateway errors, a latency outlier or an
// error-rate outlier eject a backend for a growing, capped, jittered time;
// rise passing probes end an ejection for gateway errors) and a circuit
// breaker per backend (github.com/sony/gobreaker/v2).
//
// health is a producer: it never picks backends. It changes a backend's
// state only through balancer.Pool.Update, writing the fields it owns
// (State.Health from probes, State.Ejected, Slow and Errors from passive detection,
// State.Breaker from the breakers), and it installs a balancer.Guard on each
// backend through balancer.Options.NewGuard. The pool derives the reasons
// and the verdict per backend from that one state value.
package health

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// Pool is what a Checker needs of a pool; *balancer.Pool implements it.
type Pool interface {
	Snapshot() *balancer.Snapshot
	Changed() <-chan struct{}
	Update(b *balancer.Backend, detail string, change func(*balancer.State)) bool
}

var _ Pool = (*balancer.Pool)(nil)

// Checker runs health for one upstream pool: make it with New, pass
// NewGuard as the pool's balancer.Options.NewGuard, then Run it. Safe for
// concurrent use.
type Checker struct {
	opts   atomic.Pointer[Options] // defaults applied
	pool   atomic.Pointer[poolBox] // set while Run runs
	wake   chan struct{}           // a breaker changed state
	reconf chan struct{}           // Reconfigure was called
	rand   func() float64          // [0,1); tests replace it

	mu      sync.Mutex              // serializes ejection decisions and the guards' c.mu fields
	lastRun [numDetectors]time.Time // each outlier detector's last run; guarded by mu

	beats     heartbeats    // heartbeat.go
	execSlots chan struct{} // script checks running (exec.go)
}

type poolBox struct{ p Pool }

// New returns a Checker with opts. It does nothing until Run.
func New(opts Options) *Checker {
	c := &Checker{
		wake:   make(chan struct{}, 1),
		reconf: make(chan struct{}, 1),
		rand:   rand.Float64,

		execSlots: make(chan struct{}, MaxExecChecks),
	}
	o := opts.withDefaults()
	c.opts.Store(&o)
	return c
}

func (c *Checker) log() *slog.Logger { return c.opts.Load().Logger }

// Reconfigure applies new options after a config reload. Backends keep
// their state: probe verdicts, ejections and breakers whose settings did
// not change. A breaker whose settings changed is replaced by a closed one.
func (c *Checker) Reconfigure(opts Options) {
	o := opts.withDefaults()
	c.opts.Store(&o)
	select {
	case c.reconf <- struct{}{}:
	default:
	}
}

// poke wakes Run to publish breaker states. It never blocks, so it is safe
// from gobreaker's OnStateChange, which runs under the breaker's lock.
func (c *Checker) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// NewGuard makes the guard of backend b; pass it as
// balancer.Options.NewGuard. It only builds (the pool calls it with its
// lock held).
func (c *Checker) NewGuard(b *balancer.Backend) balancer.Guard {
	g := &guard{c: c, b: b}
	g.observeFn, g.closedFn, g.trialFn = g.observe, g.doneClosed, g.doneTrial
	if o := c.opts.Load().Breaker; !o.Disabled {
		g.br.Store(g.newBreaker(o))
	}
	return g
}

func guardOf(b *balancer.Backend) *guard {
	g, _ := b.Guard().(*guard)
	return g
}

// Run probes the pool's backends, ends ejections and publishes breaker
// states until ctx is done; then it stops its probes and returns nil. It
// follows membership through pool.Changed(). Call it once per Checker.
func (c *Checker) Run(ctx context.Context, pool Pool) error {
	c.pool.Store(&poolBox{pool})
	defer c.pool.Store(nil)
	hbDone := make(chan struct{})
	hbCtx, hbStop := context.WithCancel(ctx)
	go func() { defer close(hbDone); c.heartbeatLoop(hbCtx, pool) }()
	defer func() { hbStop(); <-hbDone }()
	probes := map[*balancer.Backend]*probeTask{}
	defer func() {
		for _, t := range probes {
			t.stop()
		}
	}()
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	c.publishBreakers(pool)
	for {
		changed := pool.Changed()
		c.reconcileProbes(ctx, pool, probes)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-c.reconf:
			for b, t := range probes {
				t.stop() // restarted with the new options, state kept
				probes[b] = &probeTask{streak: t.streak}
			}
			c.reconfigureBreakers(pool)
			c.sweep(pool)
		case <-c.wake:
			c.publishBreakers(pool)
		case <-tick.C:
			c.sweep(pool)
			c.publishBreakers(pool)
		}
	}
}

func (c *Checker) currentPool() Pool {
	if b := c.pool.Load(); b != nil {
		return b.p
	}
	return nil
}

// publishBreakers polls every breaker's State(), which is also what moves
// an open breaker to half-open once its timeout has passed, and publishes
// it as the backend's State.Breaker (an open one keeps the backend out of
// rotation). This loop is State.Breaker's only writer.
func (c *Checker) publishBreakers(pool Pool) {
	for _, b := range pool.Snapshot().Members {
		g := guardOf(b)
		if g == nil {
			continue
		}
		st := balancer.BreakerClosed
		br := g.br.Load()
		if br != nil {
			st = breakerState(br.cb.State())
		}
		prev := b.State().Breaker
		if st == prev {
			continue
		}
		detail := "breaker half-open: admitting trial requests"
		switch {
		case st == balancer.BreakerOpen && prev == balancer.BreakerHalfOpen:
			detail = "breaker re-opened: a half-open trial failed"
		case st == balancer.BreakerOpen:
			detail = br.tripDetail()
		case st == balancer.BreakerClosed && prev == balancer.BreakerHalfOpen:
			detail = "breaker closed: half-open trials succeeded"
		case st == balancer.BreakerClosed:
			detail = "breaker closed"
		}
		if !pool.Update(b, detail, func(s *balancer.State) { s.Breaker = st }) {
			// No reason changed (half-open <-> closed): the pool logged nothing.
			c.log().Info("backend breaker", "backend", b.Address(), "breaker", st.String(), "detail", detail)
		}
	}
}

// reconfigureBreakers replaces breakers whose settings changed.
func (c *Checker) reconfigureBreakers(pool Pool) {
	o := c.opts.Load().Breaker
	for _, b := range pool.Snapshot().Members {
		g := guardOf(b)
		if g == nil {
			continue
		}
		br := g.br.Load()
		switch {
		case o.Disabled:
			g.br.Store(nil)
		case br == nil || br.opts != o:
			g.br.Store(g.newBreaker(o))
		}
	}
	c.publishBreakers(pool)
}

// jitter returns d shortened (sign -1) or lengthened (+1) by a random
// fraction of up to j of it.
func (c *Checker) jitter(d time.Duration, j float64, sign int) time.Duration {
	if j <= 0 {
		return d
	}
	return d + time.Duration(float64(sign)*j*c.rand()*float64(d))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
