package health

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// Defaults of the outlier detectors' fields, applied when a detector is
// configured with zero values. The latency ones are the issue's, the
// others Envoy's outlier_detection defaults.
const (
	DefaultLatencyFactor          = 3.0
	DefaultLatencyMinRequests     = 50
	DefaultOutlierInterval        = 10 * time.Second
	DefaultStdevFactor            = 1.9
	DefaultSuccessRateMinHosts    = 5
	DefaultSuccessRateVolume      = 100
	DefaultFailurePercentThresh   = 85
	DefaultFailurePercentMinHosts = 5
	DefaultFailurePercentVolume   = 50
)

// MinLatencyExcess is how far above the pool's median a backend's mean
// latency must also be to count as slow, so that sub-millisecond jitter
// between fast backends (a factor of 3 of 0.2ms) never ejects one.
const MinLatencyExcess = 10 * time.Millisecond

// LatencyOptions configures latency outlier detection: every Interval, a
// backend in rotation whose mean response latency over the interval (of
// answered attempts that were not 5xx; at least MinRequests of them) is
// more than Factor times the pool's median, and at least MinLatencyExcess
// above it, is ejected with reason "slow". The median is the lower median
// over backends with enough samples; at least two are needed.
type LatencyOptions struct {
	Factor      float64       // default 3
	MinRequests int           // default 50
	Interval    time.Duration // default 10s
}

// SuccessRateOptions configures Envoy's success-rate outlier detection:
// every Interval, when at least MinimumHosts backends in rotation each
// finished at least RequestVolume attempts in the interval, a backend
// whose success rate is below mean - StdevFactor x stdev (population
// standard deviation over those backends) is ejected with reason
// "errors". With 1.9, fewer than about six hosts can never single one out.
type SuccessRateOptions struct {
	StdevFactor   float64       // default 1.9
	MinimumHosts  int           // default 5
	RequestVolume int           // default 100
	Interval      time.Duration // default 10s
}

// FailurePercentageOptions configures Envoy's failure-percentage outlier
// detection: every Interval, when at least MinimumHosts backends in
// rotation each finished at least RequestVolume attempts in the interval,
// a backend whose failures exceed Threshold percent of them is ejected
// with reason "errors".
type FailurePercentageOptions struct {
	Threshold     int           // percent, default 85
	MinimumHosts  int           // default 5
	RequestVolume int           // default 50
	Interval      time.Duration // default 10s
}

func (p *PassiveOptions) outlierDefaults() {
	if l := p.Latency; l != nil {
		l2 := *l
		def(&l2.Factor, DefaultLatencyFactor)
		def(&l2.MinRequests, DefaultLatencyMinRequests)
		def(&l2.Interval, DefaultOutlierInterval)
		p.Latency = &l2
	}
	if s := p.SuccessRate; s != nil {
		s2 := *s
		def(&s2.StdevFactor, DefaultStdevFactor)
		def(&s2.MinimumHosts, DefaultSuccessRateMinHosts)
		def(&s2.RequestVolume, DefaultSuccessRateVolume)
		def(&s2.Interval, DefaultOutlierInterval)
		p.SuccessRate = &s2
	}
	if f := p.FailurePercentage; f != nil {
		f2 := *f
		def(&f2.Threshold, DefaultFailurePercentThresh)
		def(&f2.MinimumHosts, DefaultFailurePercentMinHosts)
		def(&f2.RequestVolume, DefaultFailurePercentVolume)
		def(&f2.Interval, DefaultOutlierInterval)
		p.FailurePercentage = &f2
	}
}

// The outlier detectors; each keeps its own interval and baselines.
const (
	detLatency = iota
	detSuccessRate
	detFailurePercentage
	numDetectors
)

// totals are a backend's cumulative attempt counters (balancer.Backend's);
// a detector differences them between its runs.
type totals struct {
	requests, gateway, errors, answered uint64
	sum                                 time.Duration
}

func totalsOf(b *balancer.Backend) totals {
	sum, answered, errors := b.LatencyTotals()
	return totals{requests: b.Requests(), gateway: b.Failures(), errors: errors, answered: answered, sum: sum}
}

func (t totals) minus(o totals) totals {
	return totals{t.requests - o.requests, t.gateway - o.gateway, t.errors - o.errors, t.answered - o.answered, t.sum - o.sum}
}

// sample is one backend's figures over a detector's interval.
type sample struct {
	g *guard
	d totals
	x float64 // the detector's figure: mean latency in ns, or success rate
}

// detectOutliers runs each configured detector whose interval has passed.
// Called by sweep with c.mu held.
func (c *Checker) detectOutliers(pool Pool, o PassiveOptions, now time.Time) {
	intervals := [numDetectors]time.Duration{}
	if o.Latency != nil {
		intervals[detLatency] = o.Latency.Interval
	}
	if o.SuccessRate != nil {
		intervals[detSuccessRate] = o.SuccessRate.Interval
	}
	if o.FailurePercentage != nil {
		intervals[detFailurePercentage] = o.FailurePercentage.Interval
	}
	for k, iv := range intervals {
		if iv <= 0 {
			c.lastRun[k] = time.Time{}
			continue
		}
		first := c.lastRun[k].IsZero()
		if !first && now.Sub(c.lastRun[k]) < iv {
			continue
		}
		c.lastRun[k] = now
		var in []sample
		for _, b := range pool.Snapshot().Members {
			g := guardOf(b)
			if g == nil {
				continue
			}
			cur := totalsOf(b)
			d := cur.minus(g.base[k])
			g.base[k] = cur
			if !first && b.Down() == 0 {
				in = append(in, sample{g: g, d: d})
			}
		}
		switch k {
		case detLatency:
			c.latencyOutliers(pool, *o.Latency, in)
		case detSuccessRate:
			c.successRateOutliers(pool, *o.SuccessRate, o.CountGatewayOnly, in)
		case detFailurePercentage:
			c.failurePercentageOutliers(pool, *o.FailurePercentage, o.CountGatewayOnly, in)
		}
	}
}

func (c *Checker) latencyOutliers(pool Pool, o LatencyOptions, in []sample) {
	in = slices.DeleteFunc(in, func(s sample) bool { return s.d.answered < uint64(max(o.MinRequests, 1)) })
	if len(in) < 2 {
		return
	}
	for i := range in {
		in[i].x = float64(in[i].d.sum) / float64(in[i].d.answered)
	}
	slices.SortFunc(in, func(a, b sample) int { return -cmp.Compare(a.x, b.x) }) // slowest first
	median := in[len(in)/2].x                                                    // the lower median: in is descending
	for _, s := range in {
		if s.x <= o.Factor*median || s.x-median < float64(MinLatencyExcess) {
			break
		}
		c.ejectLocked(pool, s.g, ejectSlow, fmt.Sprintf("mean latency %s over %d requests is more than %g x the pool's median %s (last %s)",
			time.Duration(s.x).Round(10*time.Microsecond), s.d.answered, o.Factor, time.Duration(median).Round(10*time.Microsecond), o.Interval), 0)
	}
}

// failed is how many of d's attempts count as failures for the error-rate
// detectors.
func failed(d totals, gatewayOnly bool) uint64 {
	if gatewayOnly {
		return d.gateway
	}
	return d.errors
}

func (c *Checker) successRateOutliers(pool Pool, o SuccessRateOptions, gatewayOnly bool, in []sample) {
	in = slices.DeleteFunc(in, func(s sample) bool { return s.d.requests < uint64(max(o.RequestVolume, 1)) })
	if len(in) < max(o.MinimumHosts, 1) {
		return
	}
	var mean float64
	for i := range in {
		in[i].x = 1 - float64(min(failed(in[i].d, gatewayOnly), in[i].d.requests))/float64(in[i].d.requests)
		mean += in[i].x
	}
	mean /= float64(len(in))
	var v float64
	for _, s := range in {
		v += (s.x - mean) * (s.x - mean)
	}
	limit := mean - o.StdevFactor*math.Sqrt(v/float64(len(in)))
	slices.SortFunc(in, func(a, b sample) int { return cmp.Compare(a.x, b.x) }) // worst first
	for _, s := range in {
		if s.x >= limit {
			break
		}
		c.ejectLocked(pool, s.g, ejectErrors, fmt.Sprintf("success rate %.1f%% over %d requests is below the pool's mean %.1f%% - %g stdev (%.1f%%)",
			100*s.x, s.d.requests, 100*mean, o.StdevFactor, 100*limit), 0)
	}
}

func (c *Checker) failurePercentageOutliers(pool Pool, o FailurePercentageOptions, gatewayOnly bool, in []sample) {
	in = slices.DeleteFunc(in, func(s sample) bool { return s.d.requests < uint64(max(o.RequestVolume, 1)) })
	if len(in) < max(o.MinimumHosts, 1) {
		return
	}
	for i := range in {
		in[i].x = 100 * float64(failed(in[i].d, gatewayOnly)) / float64(in[i].d.requests)
	}
	slices.SortFunc(in, func(a, b sample) int { return -cmp.Compare(a.x, b.x) }) // worst first
	for _, s := range in {
		if s.x <= float64(o.Threshold) {
			break
		}
		c.ejectLocked(pool, s.g, ejectErrors, fmt.Sprintf("%.1f%% of %d requests failed, above the threshold of %d%%",
			s.x, s.d.requests, o.Threshold), 0)
	}
}
