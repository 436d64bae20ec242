package balancer

import (
	"sync"
	"time"
)

// RecentWindow is the length of the window RecentSuccess reports on: the
// outlier detectors' default interval, so that the API and the dashboard
// show about what success_rate and failure_percentage judge.
const RecentWindow = 10 * time.Second

// recent differences a backend's cumulative request and error counters
// once per window, on the reading side: the data path pays nothing for it.
type recent struct {
	mu         sync.Mutex
	start      time.Time // when the current window began; zero before the first read
	base, prev [2]uint64 // requests and errors at the start of the current and of the previous window
}

// RecentSuccess reports the backend's success rate, 1 - errors/requests
// (errors: gateway errors and 5xx answers), over the attempts since the
// start of the previous RecentWindow (so over one to two windows; the
// first read covers everything before it, and one after a longer pause
// everything since the read before), and how many requests that is; the rate is 1 with none. Safe for concurrent use; it takes a mutex of
// its own, so it is for the admin side, not the pick path.
func (b *Backend) RecentSuccess(now time.Time) (rate float64, requests uint64) {
	cur := [2]uint64{b.requests.Load(), b.lat.errors.Load()}
	r := &b.recent
	r.mu.Lock()
	switch {
	case r.start.IsZero():
		r.start = now
		r.base, r.prev = cur, [2]uint64{}
	case now.Sub(r.start) >= 2*RecentWindow: // no read for a window: from the last snapshot
		r.start = now
		r.prev, r.base = r.base, cur
	case now.Sub(r.start) >= RecentWindow:
		r.start = r.start.Add(RecentWindow)
		r.prev, r.base = r.base, cur
	}
	since := r.prev
	r.mu.Unlock()
	requests = cur[0] - min(since[0], cur[0])
	errs := cur[1] - min(since[1], cur[1])
	if requests == 0 {
		return 1, 0
	}
	return 1 - float64(min(errs, requests))/float64(requests), requests
}
