package balancer

import (
	"sync/atomic"
	"time"
)

// Stats are an upstream's request statistics, written lock-free by the data
// path and read by the metrics exporter and the admin API.
type Stats struct {
	// Latency is the duration of whole client requests (all attempts).
	Latency Histogram
	// Retries counts extra attempts, each on another backend.
	Retries atomic.Uint64
	// Unavailable counts requests answered 503 because no backend was
	// eligible.
	Unavailable atomic.Uint64
}

// LatencyBuckets are the upper bounds, in seconds, of Histogram's buckets.
var LatencyBuckets = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

var bucketNanos = func() (b [len(LatencyBuckets)]int64) {
	for i, s := range LatencyBuckets {
		b[i] = int64(s * 1e9)
	}
	return b
}()

// Histogram is a fixed-bucket latency histogram with atomic counters:
// Observe takes no lock and does not allocate.
type Histogram struct {
	counts [len(LatencyBuckets) + 1]atomic.Uint64 // last: above every bound
	sum    atomic.Int64                           // nanoseconds
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	n := int64(d)
	i := 0
	for i < len(bucketNanos) && n > bucketNanos[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(n)
}

// Read returns the total count, the sum in seconds and the cumulative count
// at each of LatencyBuckets' bounds, in Prometheus' shape.
func (h *Histogram) Read() (count uint64, sum float64, cumulative [len(LatencyBuckets)]uint64) {
	var c uint64
	for i := range LatencyBuckets {
		c += h.counts[i].Load()
		cumulative[i] = c
	}
	count = c + h.counts[len(LatencyBuckets)].Load()
	return count, float64(h.sum.Load()) / 1e9, cumulative
}
