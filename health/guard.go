package health

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/sony/gobreaker/v2"
)

// Errors Admit returns. Both mean "pick another backend", never a client
// error; both are gobreaker's own sentinels.
var (
	// ErrBreakerOpen: the backend's breaker is open.
	ErrBreakerOpen = gobreaker.ErrOpenState
	// ErrTrialsInFlight: the breaker is half-open and its trial attempts
	// are taken.
	ErrTrialsInFlight = gobreaker.ErrTooManyRequests
)

// Errors reported to the breaker's done; they never leave the package.
var (
	errGateway = errors.New("gateway error")
	errLocal   = errors.New("local outcome") // excluded: neither success nor failure
)

// guard is a backend's balancer.Guard: its circuit breaker and its passive
// outlier detector. Admit and done run on the data path: with the breaker
// closed (the steady state) neither allocates nor takes a lock: done counts
// the result in the breaker's window (one atomic add to the calling P's
// counter, on a cache line of its own: window.go). Only a failure that
// trips the window takes gobreaker's mutex, and only a decision to eject
// takes the checker's lock.
type guard struct {
	c *Checker
	b *balancer.Backend

	fails     atomic.Int32 // consecutive gateway errors
	probation atomic.Bool  // ejection just ended: the next result decides
	trials    atomic.Int32 // half-open trial attempts admitted and not yet done

	// The done funcs Admit hands out, made once so Admit does not allocate.
	observeFn func(balancer.Result) // breaker disabled
	closedFn  func(balancer.Result) // admitted while the breaker was closed
	trialFn   func(balancer.Result) // admitted as a half-open trial

	br atomic.Pointer[breaker] // nil when the breaker is disabled

	// Guarded by c.mu.
	ejections  int                  // n of the current run of ejections (decays)
	ejectedAt  time.Time            // start of the current ejection
	until      time.Time            // end of the current ejection
	lastChange time.Time            // last ejection or decay step
	capLogged  bool                 // an ejection refused by the caps was logged
	kind       ejectKind            // what the current (or last) ejection is for
	passes     int                  // active probes passed in a row since the ejection
	base       [numDetectors]totals // counters at each outlier detector's last run
}

var _ balancer.Guard = (*guard)(nil)

// breaker is one gobreaker instance with the settings it was built from.
// gobreaker's state machine is the breaker's only source of truth; closed
// is its state as gobreaker's own OnStateChange reports it, so that Admit
// can let an attempt through a closed breaker without gobreaker's lock.
//
// While it is closed, gobreaker does not count: win does, without a lock
// (window.go), and ReadyToTrip asks win. A closed breaker's result reaches
// gobreaker only when it is a failure and win's counts say it trips, so the
// steady state never takes gobreaker's mutex; open and half-open, every
// result goes to gobreaker as before (half-open trials, their successes
// and the failure that re-opens are gobreaker's to count).
type breaker struct {
	cb     *gobreaker.CircuitBreaker[struct{}]
	opts   BreakerOptions
	win    *window
	trip   atomic.Pointer[counts] // the counts that last tripped it
	closed atomic.Bool            // written only by OnStateChange
}

func (g *guard) newBreaker(o BreakerOptions) *breaker {
	br := &breaker{opts: o, win: newWindow(o, time.Now())}
	br.closed.Store(true) // gobreaker starts closed
	br.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         g.b.Address(),
		MaxRequests:  uint32(o.HalfOpenRequests),
		Interval:     o.Window,
		BucketPeriod: o.BucketPeriod,
		Timeout:      o.OpenTimeout,
		// gobreaker calls it on a failure while closed, which it only
		// sees when win's counts trip (count): the counts are win's, not
		// gobreaker's (which has seen no successes), asked again under
		// gobreaker's lock.
		ReadyToTrip: func(gobreaker.Counts) bool {
			c := br.win.counts(time.Now())
			if !o.trips(c) {
				return false
			}
			br.trip.Store(&c)
			return true
		},
		// Runs under the breaker's lock: no logging, no breaker calls, no
		// blocking. The checker's loop reads State() and publishes it.
		// Closing starts a new generation: nothing counted before counts,
		// as gobreaker clears its own counts then. The window is reset
		// before closed is set, so the first results counted are the new
		// generation's.
		OnStateChange: func(_ string, _, to gobreaker.State) {
			if to == gobreaker.StateClosed {
				br.win.reset(time.Now())
			}
			br.closed.Store(to == gobreaker.StateClosed)
			g.c.poke()
		},
		IsExcluded: func(err error) bool { return err == errLocal },
	})
	return br
}

// Outcomes as gobreaker's Execute takes them: static funcs, so reporting a
// result allocates nothing.
var (
	reportOK      = func() (struct{}, error) { return struct{}{}, nil }
	reportGateway = func() (struct{}, error) { return struct{}{}, errGateway }
	reportLocal   = func() (struct{}, error) { return struct{}{}, errLocal }
)

// trips reports whether c, a closed breaker's window, trips it: at least
// MinRequests finished attempts, at least FailureRatio of them failed.
func (o BreakerOptions) trips(c counts) bool {
	n := c.ok + c.fail
	return int(n) >= o.MinRequests && float64(c.fail) >= o.FailureRatio*float64(n)
}

// count counts the result of an attempt admitted and finished while the
// breaker was closed. A failure that trips the window goes on to gobreaker,
// whose ReadyToTrip asks the window again and opens the breaker (another
// core's failure may have opened it first: then gobreaker refuses the
// report, as it refuses results from an older generation).
func (br *breaker) count(failed bool) {
	now := time.Now()
	br.win.add(failed, now)
	if failed && br.opts.trips(br.win.counts(now)) {
		_, _ = br.cb.Execute(reportGateway)
	}
}

// report feeds one attempt's result to gobreaker: the breaker was not
// closed when it was admitted (a half-open trial). Execute runs gobreaker's
// own admission and outcome steps back to back: an open breaker ignores the
// result, as gobreaker ignores results from before a state change.
func (br *breaker) report(r balancer.Result) {
	f := reportOK
	switch {
	case r == balancer.ResultLocal:
		f = reportLocal
	case r.GatewayError():
		f = reportGateway
	}
	_, _ = br.cb.Execute(f)
}

// Admit lets an attempt through the breaker (when enabled) and returns the
// done func that feeds the breaker and the passive detector. It never
// allocates: the done funcs are made once per guard.
//
// A closed breaker (as gobreaker last reported it) admits without a lock.
// Otherwise Admit asks gobreaker for its state, which is also what moves an
// open breaker to half-open once its timeout has passed, and admits up to
// HalfOpenRequests trials at a time while half-open.
func (g *guard) Admit() (func(balancer.Result), error) {
	br := g.br.Load()
	if br == nil {
		return g.observeFn, nil
	}
	if br.closed.Load() {
		return g.closedFn, nil
	}
	switch br.cb.State() {
	case gobreaker.StateClosed:
		return g.closedFn, nil
	case gobreaker.StateOpen:
		return nil, ErrBreakerOpen
	}
	for {
		n := g.trials.Load()
		if int(n) >= br.opts.HalfOpenRequests {
			return nil, ErrTrialsInFlight
		}
		if g.trials.CompareAndSwap(n, n+1) {
			return g.trialFn, nil
		}
	}
}

// doneClosed ends an attempt admitted by a closed breaker. When the breaker
// has left the closed state since, the result belongs to an older
// generation and only the passive detector sees it. Local outcomes count
// for nothing, as gobreaker's IsExcluded makes them.
func (g *guard) doneClosed(r balancer.Result) {
	if br := g.br.Load(); br != nil && br.closed.Load() && r != balancer.ResultLocal {
		br.count(r.GatewayError())
	}
	g.observe(r)
}

// doneTrial ends a half-open trial attempt.
func (g *guard) doneTrial(r balancer.Result) {
	g.trials.Add(-1)
	if br := g.br.Load(); br != nil {
		br.report(r)
	}
	g.observe(r)
}

// observe is the passive detector: count consecutive gateway errors and
// eject at the threshold; right after an ejection ends, one success
// re-admits for good and one failure re-ejects for longer.
func (g *guard) observe(r balancer.Result) {
	if r == balancer.ResultLocal {
		return
	}
	if g.c.opts.Load().Passive.ConsecutiveFailures <= 0 {
		return
	}
	if !r.GatewayError() {
		if g.fails.Load() != 0 {
			g.fails.Store(0)
		}
		if g.probation.Load() {
			g.probation.Store(false)
		}
		return
	}
	if g.b.Down()&outReasons != 0 {
		return // traffic in panic mode, or in flight when it was ejected
	}
	n := g.fails.Add(1)
	if g.probation.Load() || int(n) >= g.c.opts.Load().Passive.ConsecutiveFailures {
		g.c.eject(g, int(n), r)
	}
}

// breakerState maps gobreaker's state to the balancer's.
func breakerState(s gobreaker.State) balancer.BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return balancer.BreakerOpen
	case gobreaker.StateHalfOpen:
		return balancer.BreakerHalfOpen
	}
	return balancer.BreakerClosed
}

// tripDetail describes why a breaker opened.
func (br *breaker) tripDetail() string {
	c := br.trip.Load()
	if c == nil {
		return "breaker open"
	}
	return fmt.Sprintf("breaker open: %d of %d attempts failed within %s; half-open in %s",
		c.fail, c.ok+c.fail, br.opts.Window, br.opts.OpenTimeout)
}
