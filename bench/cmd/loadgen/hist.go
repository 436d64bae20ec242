package main

import "math/bits"

// hist is a log-linear latency histogram in nanoseconds, in the spirit of
// HdrHistogram: values below 2*subCount are exact, above that each power of two
// is split into subCount buckets, so every recorded value is within 1/subCount
// (under 1%) of the bucket it lands in. It is not safe for concurrent use;
// each worker records into its own and they are merged at the end.
type hist struct {
	counts [histBuckets]uint64
	total  uint64
	max    uint64
}

const (
	subBits     = 7
	subCount    = 1 << subBits
	histBuckets = 2*subCount + 40*subCount
)

func bucketOf(v uint64) int {
	if v < 2*subCount {
		return int(v)
	}
	shift := bits.Len64(v) - (subBits + 1)
	top := v >> shift // in [subCount, 2*subCount)
	i := 2*subCount + (shift-1)*subCount + int(top-subCount)
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// valueOf returns the midpoint of bucket i.
func valueOf(i int) uint64 {
	if i < 2*subCount {
		return uint64(i)
	}
	shift := (i-2*subCount)/subCount + 1
	top := uint64((i-2*subCount)%subCount + subCount)
	return top<<shift + (uint64(1)<<shift)/2
}

func (h *hist) record(ns int64) {
	if ns < 0 {
		ns = 0
	}
	v := uint64(ns)
	h.counts[bucketOf(v)]++
	h.total++
	if v > h.max {
		h.max = v
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the value at quantile q (0..1) in nanoseconds.
func (h *hist) quantile(q float64) uint64 {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := valueOf(i)
			if v > h.max {
				v = h.max
			}
			return v
		}
	}
	return h.max
}
