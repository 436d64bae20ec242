package health

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/internal/shard"
)

// window is a closed breaker's rolling counts of finished attempts, kept by
// kelpie instead of gobreaker so that counting an attempt takes no lock and
// writes no cache line another core is writing: with gobreaker counting,
// every attempt took its mutex twice, a lock all cores share (bench/README.md,
// "Two threads: the breaker's lock"). gobreaker stays the state machine: a
// closed breaker's window decides when to trip (ReadyToTrip asks it), and
// gobreaker is driven only by a failure that can trip it.
//
// The counts are cumulative per shard and never reset; the window is the
// difference between now and a snapshot of the sums taken at the start of
// the window's oldest bucket. Buckets are aligned to the generation's start
// (the breaker closing, or its creation), as gobreaker's are, and the
// window covers the current bucket and the Window/BucketPeriod-1 before it,
// as gobreaker's rolling counts do. With one bucket (a Window no longer
// than BucketPeriod) gobreaker keeps a fixed window instead, which starts
// again at the first result after it expired: so does this one.
type window struct {
	// The shards' words are 64 bytes apart, so no two share a cache line
	// whatever the allocation's alignment; the leading pad keeps the
	// fields every add reads off shard 0's line.
	_      [64]byte
	shards [shard.Count]windowShard

	period int64                     // bucket period, ns
	age    atomic.Int64              // the current bucket, counted from start; read by every add
	start  atomic.Pointer[time.Time] // the generation's start (written under mu)

	mu    sync.Mutex // snapshots: written once per bucket, read by failures
	base  counts     // the sums at the generation's start
	snaps []snap     // ring, by age: the sums at the start of each bucket
}

// windowShard packs a shard's counts into one word, so an add is one atomic
// add: successes in the high 32 bits, failures in the low 32. The low half
// cannot carry into the high one short of 4 billion failures per shard.
type windowShard struct {
	n atomic.Uint64
	_ [56]byte // the rest of the cache line: no other shard's adds land here
}

const (
	addOK   = 1 << 32
	addFail = 1
)

// counts are finished attempts: successes and failures.
type counts struct{ ok, fail uint64 }

func (c counts) sub(o counts) counts { return counts{c.ok - o.ok, c.fail - o.fail} }

// snap is the sums at the start of bucket age.
type snap struct {
	age int64
	counts
}

func newWindow(o BreakerOptions, now time.Time) *window {
	// gobreaker's bucketing: a whole number of buckets covering Window;
	// one bucket of Window without a BucketPeriod; without a Window, one
	// that never expires (withDefaults leaves no such options: defensive).
	period, n := o.BucketPeriod, time.Duration(1)
	switch {
	case o.Window <= 0:
		period = math.MaxInt64
	case period <= 0:
		period = o.Window
	default:
		n = (o.Window + period - 1) / period
	}
	w := &window{period: int64(period), snaps: make([]snap, n)}
	w.reset(now)
	return w
}

// reset starts a new generation at now: the breaker just closed (or was
// made), and nothing before counts. Results of attempts in flight across it
// may land on either side, as results reported to gobreaker from attempts
// admitted while it was closed did.
func (w *window) reset(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.start.Store(&now)
	w.base = w.sum()
	for i := range w.snaps {
		w.snaps[i] = snap{age: -1}
	}
	w.age.Store(0)
}

// add counts one finished attempt: the closed breaker's steady path. It
// reads the clock once and adds to its P's shard (package shard: 16 padded
// words, about 1 KiB per backend); only the first add of a new bucket
// takes the lock, to snapshot the sums at the bucket's start.
func (w *window) add(failed bool, now time.Time) {
	if w.stale(now) {
		w.advance(now)
	}
	d := uint64(addOK)
	if failed {
		d = addFail
	}
	w.shards[shard.Pick()].n.Add(d)
}

// ageAt is the bucket now falls in (a time before the generation's start,
// from an add that read the clock before a reset, falls in the first).
func (w *window) ageAt(now time.Time) int64 {
	return max(int64(now.Sub(*w.start.Load()))/w.period, 0)
}

// stale reports whether now is past the current bucket.
func (w *window) stale(now time.Time) bool {
	if len(w.snaps) == 1 { // gobreaker's fixed window: expired strictly after
		return int64(now.Sub(*w.start.Load())) > w.period
	}
	return w.ageAt(now) > w.age.Load()
}

// advance moves the current bucket to now's, snapshotting the sums at its
// start (and at the start of any empty buckets skipped since); a fixed
// window starts again at now. Whether to is decided again under the lock:
// another add may have advanced, or a reset moved the start, since the
// caller looked.
func (w *window) advance(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stale(now) {
		return
	}
	s := w.sum()
	if len(w.snaps) == 1 {
		w.start.Store(&now)
		w.base = s
		return
	}
	a, cur := w.ageAt(now), w.age.Load()
	for b := max(cur+1, a-int64(len(w.snaps))+1); b <= a; b++ {
		w.snaps[b%int64(len(w.snaps))] = snap{age: b, counts: s}
	}
	w.age.Store(a)
}

// counts returns the attempts finished within the window as of now.
func (w *window) counts(now time.Time) counts {
	if w.stale(now) {
		w.advance(now)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.age.Load()
	oldest := a - int64(len(w.snaps)) + 1
	from := w.base // the generation is younger than the window
	if oldest > 0 {
		if s := w.snaps[oldest%int64(len(w.snaps))]; s.age == oldest {
			from = s.counts
		}
	}
	return w.sum().sub(from)
}

// sum adds up the shards.
func (w *window) sum() counts {
	var c counts
	for i := range w.shards {
		n := w.shards[i].n.Load()
		c.ok += n >> 32
		c.fail += n & (addOK - 1)
	}
	return c
}
