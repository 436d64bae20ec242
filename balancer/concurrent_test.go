package balancer

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentPicks runs the data path (Pick, Acquire, Admit, Release,
// retries) on many goroutines while control-plane writers change
// membership, health, drain, weights and options. Under -race it proves
// the snapshot discipline; afterwards every backend's in-flight count must
// be back to zero and every acquired attempt counted once.
func TestConcurrentPicks(t *testing.T) {
	for _, algo := range algorithms {
		t.Run(algo.String(), func(t *testing.T) {
			full := equal(12)
			full[11].Backup = true
			p := newTestPool(t, Options{Algorithm: algo, PanicThreshold: 50, Name: "web"}, full)
			stable := backend(t, p, addr(0)) // never touched by the writers: a pick always exists

			seen := sync.Map{} // every *Backend ever picked
			var acquired atomic.Uint64
			stop := make(chan struct{})
			var writers sync.WaitGroup
			writers.Add(2)
			go func() { // membership and admin writer
				defer writers.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					switch i % 6 {
					case 0:
						p.SetMembers(SourceStatic, full[:6+i%6])
					case 1:
						p.SetMembers(SourceStatic, full)
					case 2:
						p.Drain(addr(1 + i%10))
					case 3:
						p.Undrain(addr(1 + (i-1)%10))
					case 4:
						p.SetWeight(addr(2), i%5)
					case 5:
						p.SetMembers(SourceConsul, []Member{{Address: fmt.Sprintf("10.0.2.%03d:80", i%4)}})
					}
				}
			}()
			go func() { // health writer
				defer writers.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					b := p.Lookup(addr(1 + i%10))
					if b == nil {
						continue
					}
					switch i % 3 {
					case 0:
						setHealth(p, b, i%2 == 0)
					case 1:
						mark(p, b, ReasonEjected, i%4 == 1)
					case 2:
						p.Update(b, "breaker", func(s *State) { s.Breaker = BreakerState(i % 3) })
					}
					_ = p.Snapshot().EligibleCount()
					_ = b.Admin()
				}
			}()

			var readers sync.WaitGroup
			for g := range 8 {
				readers.Add(1)
				go func() {
					defer readers.Done()
					var tried [3]*Backend
					for i := range 3000 {
						key := clientKey(g*10000 + i)
						n := 0
						for n < len(tried) {
							b := p.Pick(key, tried[:n])
							if b == nil {
								break
							}
							tried[n] = b
							n++
							seen.Store(b, true)
							if !b.Acquire() { // drained or removed since the pick
								continue
							}
							done, err := b.Admit()
							if err != nil {
								b.Release(ResultLocal)
								continue
							}
							acquired.Add(1)
							res := ResultOK
							if i%7 == 0 {
								res = ResultGatewayStatus
							}
							done(res)
							b.Release(res)
							break
						}
						if n == 0 {
							t.Errorf("no pick with %s never down", stable.Address())
							return
						}
					}
				}()
			}
			readers.Wait()
			close(stop)
			writers.Wait()

			var requests uint64
			seen.Range(func(k, _ any) bool {
				b := k.(*Backend)
				if b.InFlight() != 0 {
					t.Errorf("%s: %d in flight after all requests ended", b.Address(), b.InFlight())
				}
				requests += b.Requests()
				return true
			})
			if requests != acquired.Load() {
				t.Errorf("backends counted %d requests, data path made %d", requests, acquired.Load())
			}
			if stable.Down() != 0 || p.Pick(1, nil) == nil {
				t.Errorf("stable backend down (%v) or pool empty", stable.Down())
			}
		})
	}
}

// TestConcurrentReconfigure: reading a pool's name and algorithm while a
// config reload reconfigures it is safe.
func TestConcurrentReconfigure(t *testing.T) {
	p := newTestPool(t, Options{Name: "web"}, equal(3))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 500 {
			p.Reconfigure(Options{Name: "web", Algorithm: algorithms[i%3]})
		}
	}()
	for {
		select {
		case <-done:
			if p.Name() != "web" || p.Algorithm() != algorithms[499%3] {
				t.Fatalf("name %q algorithm %v after reloads", p.Name(), p.Algorithm())
			}
			return
		default:
		}
		if p.Name() != "web" {
			t.Fatalf("name %q during reload", p.Name())
		}
		_ = p.Algorithm()
		if p.Pick(7, nil) == nil {
			t.Fatal("no pick during reload")
		}
	}
}
