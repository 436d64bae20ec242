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
// outlier detector. Admit and done run on the data path; the counters are
// atomics, and only a decision to eject takes the checker's lock.
type guard struct {
	c *Checker
	b *balancer.Backend

	fails     atomic.Int32 // consecutive gateway errors
	probation atomic.Bool  // ejection just ended: the next result decides
	observeFn func(balancer.Result)

	br atomic.Pointer[breaker] // nil when the breaker is disabled

	// Guarded by c.mu.
	ejections   int       // n of the current run of ejections (decays)
	ejectedAt   time.Time // start of the current ejection
	until       time.Time // end of the current ejection
	lastChange  time.Time // last ejection or decay step
	capLogged   bool      // an ejection refused by the caps was logged
	lastBreaker balancer.BreakerState
}

var _ balancer.Guard = (*guard)(nil)

// breaker is one gobreaker instance with the settings it was built from.
type breaker struct {
	cb   *gobreaker.TwoStepCircuitBreaker[struct{}]
	opts BreakerOptions
	trip atomic.Pointer[gobreaker.Counts] // the counts that last tripped it
}

func (g *guard) newBreaker(o BreakerOptions) *breaker {
	br := &breaker{opts: o}
	br.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         g.b.Address(),
		MaxRequests:  uint32(o.HalfOpenRequests),
		Interval:     o.Window,
		BucketPeriod: o.BucketPeriod,
		Timeout:      o.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			n := c.TotalSuccesses + c.TotalFailures
			if int(n) < o.MinRequests || float64(c.TotalFailures) < o.FailureRatio*float64(n) {
				return false
			}
			br.trip.Store(&c)
			return true
		},
		// Runs under the breaker's lock: no logging, no breaker calls, no
		// blocking. The checker's loop reads State() and publishes it.
		OnStateChange: func(string, gobreaker.State, gobreaker.State) { g.c.poke() },
		IsExcluded:    func(err error) bool { return err == errLocal },
	})
	return br
}

// Admit runs the breaker (when enabled) and returns the done func that
// feeds both the breaker and the passive detector. Without a breaker it
// does not allocate.
func (g *guard) Admit() (func(balancer.Result), error) {
	br := g.br.Load()
	if br == nil {
		return g.observeFn, nil
	}
	bdone, err := br.cb.Allow()
	if err != nil {
		return nil, err
	}
	return func(r balancer.Result) {
		switch {
		case r == balancer.ResultLocal:
			bdone(errLocal)
		case r.GatewayError():
			bdone(errGateway)
		default:
			bdone(nil)
		}
		g.observe(r)
	}, nil
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
	if g.b.Down()&balancer.ReasonEjected != 0 {
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
		c.TotalFailures, c.TotalSuccesses+c.TotalFailures, br.opts.Window, br.opts.OpenTimeout)
}
