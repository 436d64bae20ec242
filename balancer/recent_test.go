package balancer

import (
	"testing"
	"time"
)

// TestRecentSuccessWindow: the success rate the API shows covers the
// recent past, not the backend's whole life: errors of long ago stop
// counting two windows later, and new ones show at once.
func TestRecentSuccessWindow(t *testing.T) {
	b := newBackend("a", State{})
	serve := func(n, errs int) {
		for i := range n {
			b.requests.Add(1)
			b.Observe(time.Millisecond, 200+300*min(1, max(0, errs-i)), false) // the first errs are 500
		}
	}
	t0 := time.Unix(1000, 0)
	check := func(at time.Duration, wantRate float64, wantReqs uint64) {
		t.Helper()
		rate, reqs := b.RecentSuccess(t0.Add(at))
		if rate != wantRate || reqs != wantReqs {
			t.Fatalf("at %s: rate %v over %d requests, want %v over %d", at, rate, reqs, wantRate, wantReqs)
		}
	}
	check(0, 1, 0) // nothing yet
	serve(100, 50) // a bad start
	check(time.Second, 0.5, 100)
	check(RecentWindow+time.Second, 0.5, 100) // the first window turns: still covered
	serve(100, 0)
	check(2*RecentWindow+time.Second, 1, 100) // the bad start is two windows old
	serve(10, 10)
	check(2*RecentWindow+2*time.Second, 1-10.0/110, 110) // new errors show at once
	// After a pause longer than a window, the read covers what came
	// since the last window began (the 10 errors), then turns as usual.
	check(5*RecentWindow, 0, 10)
	check(6*RecentWindow+time.Second, 1, 0)
}

// TestRecentSuccessAllocs: reading it allocates nothing.
func TestRecentSuccessAllocs(t *testing.T) {
	b := newBackend("a", State{})
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { now = now.Add(time.Second); b.RecentSuccess(now) }); n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}
