package health

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/sony/gobreaker/v2"
)

// soleGuard is the guard of a one-backend pool under a checker with opts
// (its loop not running: the test drives the breaker alone).
func soleGuard(t *testing.T, opts Options) (*guard, *Checker) {
	t.Helper()
	c := New(opts)
	p := balancer.NewPool(balancer.Options{NewGuard: c.NewGuard})
	t.Cleanup(p.Close)
	p.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "a:1"}})
	return p.Lookup("a:1").Guard().(*guard), c
}

// referenceBreaker is the breaker as it was before kelpie counted the
// closed window itself: a gobreaker fed every result through Execute,
// tripping on its own counts. The guard must agree with it, attempt by
// attempt, on every admission and every state.
func referenceBreaker(o BreakerOptions, entered map[gobreaker.State]int) *gobreaker.CircuitBreaker[struct{}] {
	return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		MaxRequests:  uint32(o.HalfOpenRequests),
		Interval:     o.Window,
		BucketPeriod: o.BucketPeriod,
		Timeout:      o.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			n := c.TotalSuccesses + c.TotalFailures
			return int(n) >= o.MinRequests && float64(c.TotalFailures) >= o.FailureRatio*float64(n)
		},
		OnStateChange: func(_ string, _, to gobreaker.State) { entered[to]++ },
		IsExcluded:    func(err error) bool { return err == errLocal },
	})
}

// TestBreakerWindowMatchesGobreaker runs random traffic (failure rates
// from none to all, local outcomes, pauses from none to longer than the
// window, landing on bucket boundaries too) through a guard and through
// gobreaker counting every result itself, and fails at the first attempt
// where they disagree: a breaker that trips where gobreaker would not, or
// stays closed where gobreaker trips, or counts a result in another
// bucket, or keeps counts across a generation. Rolling windows (whole and
// rounded up) and gobreaker's fixed window (one bucket) are all covered.
func TestBreakerWindowMatchesGobreaker(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    BreakerOptions
	}{
		{"rolling", BreakerOptions{FailureRatio: 0.5, MinRequests: 5, Window: 3 * time.Second, BucketPeriod: time.Second, OpenTimeout: 2 * time.Second, HalfOpenRequests: 2}},
		{"rounded", BreakerOptions{FailureRatio: 0.3, MinRequests: 8, Window: 2500 * time.Millisecond, BucketPeriod: 500 * time.Millisecond, OpenTimeout: time.Second, HalfOpenRequests: 3}},
		{"fixed", BreakerOptions{FailureRatio: 0.6, MinRequests: 4, Window: 700 * time.Millisecond, OpenTimeout: time.Second, HalfOpenRequests: 1}},
	} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("%s/%d", tc.name, seed), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) { compareWithGobreaker(t, tc.o, seed) })
			})
		}
	}
}

func compareWithGobreaker(t *testing.T, o BreakerOptions, seed uint64) {
	g, c := soleGuard(t, Options{Breaker: o})
	o = c.opts.Load().Breaker // with defaults, as the guard's breaker has them
	entered := map[gobreaker.State]int{}
	ref := referenceBreaker(o, entered)
	rng := rand.New(rand.NewPCG(seed, 20))
	ops := map[balancer.Result]func() (struct{}, error){balancer.ResultOK: reportOK, gw: reportGateway, balancer.ResultLocal: reportLocal}
	failP := 0.0
	for i := range 5000 {
		if i%150 == 0 {
			failP = []float64{0, 0.2, 0.5, 0.8, 1}[rng.IntN(5)]
		}
		switch rng.IntN(5) {
		case 0, 1: // back to back
		case 2:
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		case 3:
			time.Sleep(time.Duration(rng.IntN(10)) * 100 * time.Millisecond) // on bucket boundaries
		case 4:
			if rng.IntN(20) == 0 {
				time.Sleep(o.Window + time.Duration(rng.IntN(2000))*time.Millisecond)
			}
		}
		r := balancer.ResultOK
		if x := rng.Float64(); x < 0.05 {
			r = balancer.ResultLocal
		} else if x < 0.05+0.95*failP {
			r = gw
		}
		done, err := g.Admit()
		_, refErr := ref.Execute(ops[r])
		refAdmitted := !errors.Is(refErr, gobreaker.ErrOpenState) && !errors.Is(refErr, gobreaker.ErrTooManyRequests)
		if (err == nil) != refAdmitted {
			t.Fatalf("attempt %d at %s: guard admitted=%v (%v), gobreaker admitted=%v (%v)", i, time.Now().Format("15:04:05.000"), err == nil, err, refAdmitted, refErr)
		}
		if done != nil {
			done(r)
		}
		got, want := g.br.Load().cb.State(), ref.State()
		if got != want {
			t.Fatalf("attempt %d (%s) at %s: guard's breaker %s, gobreaker counting alone %s (window %+v)",
				i, r, time.Now().Format("15:04:05.000"), got, want, g.br.Load().win.counts(time.Now()))
		}
	}
	// Not a vacuous agreement: the traffic tripped and recovered the
	// breaker, and many times.
	opened, closed := entered[gobreaker.StateOpen], entered[gobreaker.StateClosed]
	if opened < 10 || closed < 5 {
		t.Fatalf("the traffic opened the breaker %d times and closed it %d times: too few to compare", opened, closed)
	}
	t.Logf("opened %d times, closed %d times, in agreement", opened, closed)
}

// TestBreakerWindowConcurrent counts from every core at once: no result is
// lost (the window's sums are exact), a healthy backend's breaker never
// trips, and a failing one's does.
func TestBreakerWindowConcurrent(t *testing.T) {
	g, _ := soleGuard(t, Options{})
	workers, each := 2*runtime.GOMAXPROCS(0), 2000
	hammer := func(r balancer.Result) {
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range each {
					if done, err := g.Admit(); err == nil {
						done(r)
					}
				}
			})
		}
		wg.Wait()
	}
	hammer(balancer.ResultOK)
	br := g.br.Load()
	if got := br.win.counts(time.Now()); got != (counts{ok: uint64(workers * each)}) {
		t.Fatalf("window %+v after %d successes", got, workers*each)
	}
	if br.cb.State() != gobreaker.StateClosed {
		t.Fatalf("successes alone tripped the breaker: %s", br.cb.State())
	}
	hammer(gw)
	if br.cb.State() != gobreaker.StateOpen {
		t.Fatalf("%d failures after %d successes left the breaker %s (window %+v)", workers*each, workers*each, br.cb.State(), br.win.counts(time.Now()))
	}
	if c := br.trip.Load(); c == nil || c.fail < c.ok || int(c.ok+c.fail) < br.opts.MinRequests {
		t.Fatalf("tripped on counts %+v, which do not trip", c)
	}
}

// TestBreakerWindowClosedPathLockFree: while the breaker is closed, results
// do not reach gobreaker (its counts stay empty: its mutex is not taken),
// a failure below the thresholds included; the failure that trips it does.
func TestBreakerWindowClosedPathLockFree(t *testing.T) {
	o := breakerOpts()
	g, _ := soleGuard(t, o)
	br := g.br.Load()
	for _, r := range []balancer.Result{balancer.ResultOK, balancer.ResultOK, gw, balancer.ResultLocal} {
		done, err := g.Admit()
		if err != nil {
			t.Fatal(err)
		}
		done(r)
	}
	if c := br.cb.Counts(); c != (gobreaker.Counts{}) {
		t.Fatalf("gobreaker counted %+v while closed below the thresholds", c)
	}
	done, _ := g.Admit()
	done(gw) // 2 of 4: trips
	if br.cb.State() != gobreaker.StateOpen {
		t.Fatalf("breaker %s after 2 failures of 4, want open", br.cb.State())
	}
}
