package bench

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
)

var (
	algorithms = []balancer.Algorithm{balancer.RoundRobin, balancer.LeastConn, balancer.IPHash, balancer.Hash, balancer.LeastLatency}
	poolSizes  = []int{3, 10, 100, 300}
)

// pickPool builds a pool of n backends without guards; weighted gives them
// weights 1..3.
func pickPool(b *testing.B, algo balancer.Algorithm, n int, weighted bool) *balancer.Pool {
	return guardedPool(b, algo, n, weighted, nil)
}

// guardedPool is pickPool with each backend's guard made by newGuard.
func guardedPool(b *testing.B, algo balancer.Algorithm, n int, weighted bool, newGuard func(*balancer.Backend) balancer.Guard) *balancer.Pool {
	b.Helper()
	ms := make([]balancer.Member, n)
	for i := range ms {
		ms[i] = balancer.Member{Address: fmt.Sprintf("10.%d.%d.%d:8080", i>>16, (i>>8)&255, i&255), Weight: 1}
		if weighted {
			ms[i].Weight = 1 + i%3
		}
	}
	p := balancer.NewPool(balancer.Options{Name: "bench", Algorithm: algo, NewGuard: newGuard})
	p.SetMembers(balancer.SourceStatic, ms)
	b.Cleanup(p.Close)
	return p
}

// keys are precomputed client hashes, so the benchmarks time Pick alone.
var keys = func() (k [1024]uint64) {
	for i := range k {
		k[i] = balancer.HashIP(netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}))
	}
	return k
}()

// runPicks benchmarks every algorithm at every pool size.
func runPicks(b *testing.B, weighted bool, body func(b *testing.B, p *balancer.Pool)) {
	for _, algo := range algorithms {
		b.Run(algo.String(), func(b *testing.B) {
			for _, n := range poolSizes {
				b.Run(fmt.Sprint(n), func(b *testing.B) {
					p := pickPool(b, algo, n, weighted)
					b.ReportAllocs()
					body(b, p)
				})
			}
		})
	}
}

func serialPicks(b *testing.B, p *balancer.Pool) {
	i := 0
	for b.Loop() {
		if p.Pick(keys[i&(len(keys)-1)], nil) == nil {
			b.Fatal("no pick")
		}
		i++
	}
}

// BenchmarkPick is one Pick on one goroutine, equal weights.
func BenchmarkPick(b *testing.B) { runPicks(b, false, serialPicks) }

// BenchmarkPickHashBounded is the hash algorithm with bounded loads
// (factor 125%) while a tenth of the backends are at their bound: the pick
// sums the tier's in-flight counts and walks past full backends.
func BenchmarkPickHashBounded(b *testing.B) {
	for _, n := range poolSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			p := balancer.NewPool(balancer.Options{Name: "bench", Algorithm: balancer.Hash, HashBalanceFactor: 125})
			ms := make([]balancer.Member, n)
			for i := range ms {
				ms[i] = balancer.Member{Address: fmt.Sprintf("10.%d.%d.%d:8080", i>>16, (i>>8)&255, i&255), Weight: 1}
			}
			p.SetMembers(balancer.SourceStatic, ms)
			b.Cleanup(p.Close)
			for i, m := range p.Snapshot().Members {
				for range 1 + 3*(i%10/9) { // every tenth backend far above the average
					m.Acquire()
				}
			}
			b.ReportAllocs()
			serialPicks(b, p)
		})
	}
}

// BenchmarkPickWeighted is BenchmarkPick with weights 1..3 (round robin's
// schedule, ip_hash's logarithmic scores).
func BenchmarkPickWeighted(b *testing.B) { runPicks(b, true, serialPicks) }

// BenchmarkPickParallel is Pick on every P at once: contention on the
// round robin cursor and the snapshot pointer's cache line.
func BenchmarkPickParallel(b *testing.B) {
	runPicks(b, false, func(b *testing.B, p *balancer.Pool) {
		var seed atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(97))
			for pb.Next() {
				if p.Pick(keys[i&(len(keys)-1)], nil) == nil {
					b.Fatal("no pick")
				}
				i++
			}
		})
	})
}

// BenchmarkPickRetry is a retry's Pick: one backend already tried.
func BenchmarkPickRetry(b *testing.B) {
	runPicks(b, false, func(b *testing.B, p *balancer.Pool) {
		tried := []*balancer.Backend{p.Snapshot().Members[0]}
		i := 0
		for b.Loop() {
			if p.Pick(keys[i&(len(keys)-1)], tried) == nil {
				b.Fatal("no pick")
			}
			i++
		}
	})
}

// BenchmarkAttempt is the whole per-attempt balancer cost on the data
// path: Pick, Acquire, Admit, done and Release, in parallel. guard=none has
// no guard; guard=default is the default config's health guard (circuit
// breaker on, passive detection after 5 gateway errors).
func BenchmarkAttempt(b *testing.B) {
	for _, g := range []string{"none", "default"} {
		b.Run("guard="+g, func(b *testing.B) {
			for _, algo := range algorithms {
				b.Run(algo.String(), func(b *testing.B) {
					for _, n := range poolSizes {
						b.Run(fmt.Sprint(n), func(b *testing.B) {
							var newGuard func(*balancer.Backend) balancer.Guard
							if g == "default" {
								newGuard = defaultChecker().NewGuard
							}
							attempts(b, guardedPool(b, algo, n, false, newGuard))
						})
					}
				})
			}
		})
	}
}

func attempts(b *testing.B, p *balancer.Pool) {
	b.ReportAllocs()
	var seed atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(97))
		for pb.Next() {
			attemptOn(b, p.Pick(keys[i&(len(keys)-1)], nil))
			i++
		}
	})
}

// attemptOn is the balancer's part of one successful attempt on be, as
// the proxy makes it: Acquire, the guard's Admit and done, Release.
func attemptOn(b *testing.B, be *balancer.Backend) {
	if !be.Acquire() {
		b.Fatal("acquire failed")
	}
	done, err := be.Admit()
	if err != nil {
		b.Fatal(err)
	}
	done(balancer.ResultOK)
	be.Release(balancer.ResultOK)
}

// BenchmarkRebuild is the control-plane cost of one snapshot rebuild (here
// a refresh with an unchanged list, as every health flip does), which
// includes round robin's precomputed schedule. heavy uses weights up to
// MaxWeight, so the schedule is at its size cap.
func BenchmarkRebuild(b *testing.B) {
	for _, heavy := range []bool{false, true} {
		for _, algo := range algorithms {
			for _, n := range poolSizes {
				b.Run(fmt.Sprintf("heavy=%v/%v/%d", heavy, algo, n), func(b *testing.B) {
					ms := make([]balancer.Member, n)
					for i := range ms {
						ms[i] = balancer.Member{Address: fmt.Sprintf("10.%d.%d.%d:8080", i>>16, (i>>8)&255, i&255), Weight: 1 + i%3}
						if heavy {
							ms[i].Weight = balancer.MaxWeight - i
						}
					}
					p := balancer.NewPool(balancer.Options{Algorithm: algo})
					b.Cleanup(p.Close)
					b.ReportAllocs()
					for b.Loop() {
						p.SetMembers(balancer.SourceStatic, ms)
					}
				})
			}
		}
	}
}
