package bench

import (
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/metrics"
	"github.com/valyala/fasthttp"
)

// BenchmarkRequestShared is everything one proxied request does to state
// that other cores share, outside the sockets, through the real functions
// in the order the proxy calls them (forward, begin/admit and finish in
// proxy/attempt.go, the request-id counter in PrepareRequest): run in
// parallel, so `-cpu 1,2` shows what grows from one core to two. The pool
// is the default configuration's: round robin over 3 backends, each with
// the health guard (circuit breaker on, passive detection after 5 gateway
// errors). Components:
//
//   - pick: Pool.Pick (the snapshot pointer, the round robin cursor);
//   - acquire: Backend.Acquire and Release (in-flight, request counters);
//   - guard: the guard's Admit and done (breaker, passive detector);
//   - codes: UpstreamStats.CountCode (the backend's status code counters);
//   - latency: Backend.Observe (latency EWMA and outlier counters);
//   - histograms: the upstream's two latency histograms;
//   - headers: PrepareRequest on a request without an id (the id counter,
//     and the header work around it, which shares nothing);
//   - all: pick to histograms, one whole attempt.
//
// ns/op of a parallel benchmark is wall time over all cores' operations;
// cpu-ns/op is the process's CPU time (user and system) per operation, the
// figure comparable from -cpu 1 to -cpu 2 on a machine other work shares
// (headers, which shares next to nothing, is the control: what it grows is
// the machine's noise, not contention).
func BenchmarkRequestShared(b *testing.B) {
	newPool := func(b *testing.B) (*balancer.Pool, *metrics.UpstreamStats) {
		p := guardedPool(b, balancer.RoundRobin, 3, false, defaultChecker().NewGuard)
		return p, metrics.New(nil).Upstream(p)
	}
	const rtt = 300 * time.Microsecond
	attempt := func(b *testing.B, s *metrics.UpstreamStats, be *balancer.Backend) {
		attemptOn(b, be)
		s.CountCode(be, 200)
		be.Observe(rtt, 200, false)
		s.Answered.Observe(rtt)
		s.Latency.Observe(rtt)
	}
	parallel := func(b *testing.B, body func(i int)) {
		b.ReportAllocs()
		var seed atomic.Uint64
		cpu := cpuTime(b)
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(97))
			for pb.Next() {
				body(i)
				i++
			}
		})
		reportCPU(b, cpu)
	}
	b.Run("pick", func(b *testing.B) {
		p, _ := newPool(b)
		parallel(b, func(i int) {
			if p.Pick(keys[i&(len(keys)-1)], nil) == nil {
				b.Fatal("no pick")
			}
		})
	})
	b.Run("acquire", func(b *testing.B) {
		p, _ := newPool(b)
		ms := p.Snapshot().Members
		parallel(b, func(i int) {
			be := ms[i%len(ms)]
			if !be.Acquire() {
				b.Fatal("acquire failed")
			}
			be.Release(balancer.ResultOK)
		})
	})
	b.Run("guard", func(b *testing.B) {
		p, _ := newPool(b)
		ms := p.Snapshot().Members
		parallel(b, func(i int) {
			done, err := ms[i%len(ms)].Admit()
			if err != nil {
				b.Fatal(err)
			}
			done(balancer.ResultOK)
		})
	})
	b.Run("codes", func(b *testing.B) {
		p, s := newPool(b)
		ms := p.Snapshot().Members
		parallel(b, func(i int) { s.CountCode(ms[i%len(ms)], 200) })
	})
	b.Run("latency", func(b *testing.B) {
		p, _ := newPool(b)
		ms := p.Snapshot().Members
		parallel(b, func(i int) { ms[i%len(ms)].Observe(rtt, 200, false) })
	})
	b.Run("histograms", func(b *testing.B) {
		_, s := newPool(b)
		parallel(b, func(int) {
			s.Answered.Observe(rtt)
			s.Latency.Observe(rtt)
		})
	})
	b.Run("headers", func(b *testing.B) {
		px := newHeaderProxy(b)
		b.ReportAllocs()
		cpu := cpuTime(b)
		b.RunParallel(func(pb *testing.PB) {
			var saved, req fasthttp.Request
			parsed(b, &saved) // one per goroutine: fasthttp's headers are not shared
			for pb.Next() {
				saved.Header.CopyTo(&req.Header)
				if st := px.PrepareRequest(&req, peer, false); st != 0 {
					b.Fatalf("status %d", st)
				}
			}
		})
		reportCPU(b, cpu)
	})
	b.Run("all", func(b *testing.B) {
		p, s := newPool(b)
		parallel(b, func(i int) {
			be := p.Pick(keys[i&(len(keys)-1)], nil)
			if be == nil {
				b.Fatal("no pick")
			}
			attempt(b, s, be)
		})
	})
}

// cpuTime returns the process's CPU time so far (user and system).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time since since per operation as cpu-ns/op.
func reportCPU(b *testing.B, since time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-since)/float64(b.N), "cpu-ns/op")
}
