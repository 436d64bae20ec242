package metrics

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/internal/shard"
)

// UpstreamStats are one upstream's request figures: written lock-free and
// without allocating by the data path (proxy), read at scrape time. Get
// them with Metrics.Upstream; the zero value is ready to use (unexported:
// scraped by nobody). Safe for concurrent use; do not copy.
type UpstreamStats struct {
	// Latency is the duration of whole client requests (all attempts).
	Latency Histogram
	// Answered is the time to the response head of attempts a backend
	// answered (any status but 502/503/504): the automatic hedge delay's
	// input. Unlike Latency it leaves out the attempts that hang, whose
	// clients the hedge already rescues, so it cannot chase its own tail.
	// Not exported to /metrics.
	Answered Histogram
	// Retries counts extra attempts, each on another backend.
	Retries atomic.Uint64
	// Hedges counts hedged attempts: a second attempt sent because the
	// first had not answered within the hedge delay.
	Hedges atomic.Uint64
	// Unavailable counts requests answered 503 because no backend was
	// eligible.
	Unavailable atomic.Uint64
	// Tunnels is the number of open tunnels (upgraded connections:
	// WebSockets) to the upstream's backends.
	Tunnels atomic.Int64
	// Failed counts requests whose client got a gateway error: kelpie's
	// 502/504 after the last attempt failed, a backend's 502/503/504 passed
	// on, and Unavailable's 503s. Failover drills count these as
	// client-visible errors.
	Failed atomic.Uint64

	codes sync.Map // *balancer.Backend -> *codeCounts
}

// maxCode bounds the status codes counted: HTTP's are three digits, 100-599.
const maxCode = 600

type codeCounts [maxCode]atomic.Uint64

// CountCode records one finished attempt on b that produced HTTP status code
// (kelpie's own 502/504 for gateway errors); codes outside 1-599 are not
// counted. It takes no lock and allocates only at a backend's first code,
// which is also when the counters of backends that left the pool are
// dropped, so they do not pile up between scrapes.
func (s *UpstreamStats) CountCode(b *balancer.Backend, code int) {
	if code <= 0 || code >= maxCode {
		return
	}
	c, ok := s.codes.Load(b)
	if !ok {
		s.dropRemoved()
		c, _ = s.codes.LoadOrStore(b, new(codeCounts))
	}
	c.(*codeCounts)[code].Add(1)
}

// Codes calls fn for each status code counted on b, with its count.
func (s *UpstreamStats) Codes(b *balancer.Backend, fn func(code int, n uint64)) {
	c, ok := s.codes.Load(b)
	if !ok {
		return
	}
	for code := range c.(*codeCounts) {
		if n := c.(*codeCounts)[code].Load(); n > 0 {
			fn(code, n)
		}
	}
}

// dropRemoved drops the code counters of backends that left the pool: they
// are no longer scraped, and an address that returns is a new Backend. An
// attempt still in flight on one may count it again; the next call drops
// it again.
func (s *UpstreamStats) dropRemoved() {
	s.codes.Range(func(k, _ any) bool {
		if k.(*balancer.Backend).State().Removed {
			s.codes.Delete(k)
		}
		return true
	})
}

// LatencyBuckets are the upper bounds, in seconds, of Histogram's buckets:
// kelpie_request_duration_seconds' le values.
var LatencyBuckets = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

var bucketNanos = func() (b [len(LatencyBuckets)]int64) {
	for i, s := range LatencyBuckets {
		b[i] = int64(s * 1e9)
	}
	return b
}()

// Histogram is a fixed-bucket latency histogram with atomic counters:
// Observe takes no lock and does not allocate. Every request of an upstream
// observes its two histograms, from every core, so the counters are
// sharded (package shard): one histogram's counters on shared cache lines
// made an observation 10 times dearer at two cores than at one
// (BenchmarkRequestShared/histograms). Read sums the shards.
type Histogram struct {
	_      [64]byte // off the cache line of whatever precedes it
	shards [shard.Count]histShard
}

// histShard is one shard's counters, followed by a cache line of padding:
// any two shards' counters are at least 64 bytes apart, so never on one
// line, whatever the histogram's alignment.
type histShard struct {
	counts [len(LatencyBuckets) + 1]atomic.Uint64 // last: above every bound
	sum    atomic.Int64                           // nanoseconds
	_      [64]byte
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	n := int64(d)
	i := 0
	for i < len(bucketNanos) && n > bucketNanos[i] {
		i++
	}
	s := &h.shards[shard.Pick()]
	s.counts[i].Add(1)
	s.sum.Add(n)
}

// Read returns the total count, the sum in seconds and the cumulative count
// at each of LatencyBuckets' bounds, in Prometheus' shape. Concurrent
// observations may be in the sum but not the counts, or the reverse: a
// scrape is a moment's approximation, as it was with one set of counters.
func (h *Histogram) Read() (count uint64, sum float64, cumulative [len(LatencyBuckets)]uint64) {
	var counts [len(LatencyBuckets) + 1]uint64
	var ns int64
	for i := range h.shards {
		s := &h.shards[i]
		for j := range counts {
			counts[j] += s.counts[j].Load()
		}
		ns += s.sum.Load()
	}
	var c uint64
	for i := range LatencyBuckets {
		c += counts[i]
		cumulative[i] = c
	}
	count = c + counts[len(LatencyBuckets)]
	return count, float64(ns) / 1e9, cumulative
}
