package balancer

import (
	"math"
	"sync/atomic"
	"time"
)

// DefaultEWMADecay is the time constant of the peak-EWMA of response
// latency that least_latency balances on: Finagle's and Linkerd's 10s.
const DefaultEWMADecay = 10 * time.Second

// epoch anchors the monotonic clock the latency samples are stamped with.
var epoch = time.Now()

// monoNow is nanoseconds on the monotonic clock since epoch.
func monoNow() int64 { return int64(time.Since(epoch)) }

// latency is a backend's record of its attempts' response latency, written
// by the data path (Backend.Observe) with atomics only. ewma is the
// peak-EWMA that least_latency picks by; the cumulative counters are what
// health's outlier detectors difference each interval.
type latency struct {
	ewma  atomic.Int64 // peak-EWMA of response latency in ns; 0 = no sample since (re)joining
	stamp atomic.Int64 // monoNow of the last sample
	tau   atomic.Int64 // decay time constant in ns, the pool's EWMADecay; set by the pool's writer

	sum    atomic.Uint64 // total ns of the latency of answered attempts (sans penalties)
	n      atomic.Uint64 // answered attempts counted in sum
	errors atomic.Uint64 // attempts that ended in a gateway error or a 5xx status
}

// decayed is ewma as of now: the peak-EWMA decays towards zero while no
// sample arrives (Finagle's PeakEwma does the same on read), so a backend
// that was slow a while ago is tried again.
func decayed(ewma, stamp, now int64, tau float64) float64 {
	if ewma == 0 {
		return 0
	}
	if dt := now - stamp; dt > 0 {
		return float64(ewma) * math.Exp(-float64(dt)/tau)
	}
	return float64(ewma)
}

// Observe records one finished attempt: rtt is the time to its response
// head (or to its failure), status the status it produced (the backend's,
// or kelpie's 502/504), failed whether it counts as an error. A failed
// attempt's rtt should already include the penalty the caller charges for
// errors (the proxy charges the response timeout), so a backend that fails
// fast does not look fast. Lock-free and allocation-free; concurrent
// samples may overwrite each other's EWMA update, which costs one sample.
// ResultLocal outcomes must not be observed.
func (b *Backend) Observe(rtt time.Duration, status int, failed bool) {
	l := &b.lat
	if failed || status >= 500 {
		l.errors.Add(1)
	}
	if !failed && status < 500 {
		l.sum.Add(uint64(max(rtt, 0)))
		l.n.Add(1)
	}
	tau := l.tau.Load()
	if tau <= 0 {
		tau = int64(DefaultEWMADecay)
	}
	// Finagle's PeakEwma: a sample above the average replaces it (the
	// peak); one below pulls it down with the weight of the time since
	// the last sample, w = exp(-dt/tau).
	now := monoNow()
	x := float64(max(rtt, 1))
	if cur := float64(l.ewma.Load()); x < cur {
		w := math.Exp(-float64(max(now-l.stamp.Load(), 0)) / float64(tau))
		x = cur*w + x*(1-w)
	}
	l.ewma.Store(int64(math.Max(x, 1)))
	l.stamp.Store(now)
}

// LatencyEWMA is the backend's peak-EWMA of response latency as of now
// (errors weigh in at their penalty), or 0 when it has no sample since it
// joined or last came back into rotation.
func (b *Backend) LatencyEWMA() time.Duration {
	tau := b.lat.tau.Load()
	if tau <= 0 {
		tau = int64(DefaultEWMADecay)
	}
	return time.Duration(decayed(b.lat.ewma.Load(), b.lat.stamp.Load(), monoNow(), float64(tau)))
}

// LatencyTotals reports cumulative counters for outlier detection: the
// summed latency and number of answered attempts (those that were neither
// gateway errors nor 5xx), and the number of attempts that were errors
// (gateway errors and 5xx statuses).
func (b *Backend) LatencyTotals() (sum time.Duration, answered, errors uint64) {
	return time.Duration(b.lat.sum.Load()), b.lat.n.Load(), b.lat.errors.Load()
}

// forget drops the EWMA so that the backend starts again at the pool's
// median. The pool's writer calls it when the backend comes back into
// rotation: its old figure is either stale or what got it ejected.
func (l *latency) forget() { l.ewma.Store(0) }
