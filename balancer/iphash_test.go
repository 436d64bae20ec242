package balancer

import (
	"fmt"
	"math"
	"net/netip"
	"testing"
)

// assignment maps each of n clients to the address ip_hash picks for it.
func assignment(p *Pool, n int) []string {
	out := make([]string, n)
	for i := range out {
		if b := p.Pick(clientKey(i), nil); b != nil {
			out[i] = b.Address()
		}
	}
	return out
}

func TestIPHashStable(t *testing.T) {
	for _, ws := range [][]int{{1, 1, 1}, {3, 1, 1}} {
		p := newTestPool(t, Options{Algorithm: IPHash}, weighted(ws...))
		first := assignment(p, 2000)
		for range 3 {
			again := assignment(p, 2000)
			for i := range first {
				if again[i] != first[i] {
					t.Fatalf("weights %v: client %d moved %s -> %s with nothing changed", ws, i, first[i], again[i])
				}
			}
		}
		// A refresh and a health flip elsewhere move nobody who was not on
		// the flipped backend.
		p.SetMembers(SourceStatic, weighted(ws...))
		b2 := backend(t, p, addr(2))
		setHealth(p, b2, false)
		during := assignment(p, 2000)
		setHealth(p, b2, true)
		after := assignment(p, 2000)
		for i := range first {
			if first[i] != addr(2) && during[i] != first[i] {
				t.Errorf("weights %v: client %d moved %s -> %s while another backend was down", ws, i, first[i], during[i])
			}
			if after[i] != first[i] {
				t.Errorf("weights %v: client %d did not return to %s after recovery (on %s)", ws, i, first[i], after[i])
			}
		}
	}
}

// TestIPHashMinimalDisruption: removing one of N backends moves exactly the
// clients it had (about 1/N); adding one moves about 1/(N+1), all of them
// to the new backend.
func TestIPHashMinimalDisruption(t *testing.T) {
	const clients = 20_000
	for _, n := range []int{3, 5, 10, 30} {
		for _, weighted := range []bool{false, true} {
			t.Run(fmt.Sprintf("n=%d weighted=%v", n, weighted), func(t *testing.T) {
				ms := equal(n)
				if weighted {
					for i := range ms {
						ms[i].Weight = 1 + i%3
					}
				}
				p := newTestPool(t, Options{Algorithm: IPHash}, ms)
				before := assignment(p, clients)

				gone := ms[n/2]
				p.SetMembers(SourceStatic, append(append([]Member{}, ms[:n/2]...), ms[n/2+1:]...))
				after := assignment(p, clients)
				moved := 0
				for i := range before {
					if before[i] != after[i] {
						moved++
						if before[i] != gone.Address {
							t.Fatalf("client %d moved %s -> %s though %s left", i, before[i], after[i], gone.Address)
						}
					}
					if after[i] == gone.Address {
						t.Fatalf("client %d still on removed %s", i, gone.Address)
					}
				}
				total := 0
				for _, m := range ms {
					total += max(m.Weight, 1)
				}
				want := float64(max(gone.Weight, 1)) / float64(total)
				if got := float64(moved) / clients; math.Abs(got-want) > 0.02 {
					t.Errorf("removing 1 of %d moved %.3f of clients, want %.3f", n, got, want)
				}

				p.SetMembers(SourceStatic, ms) // it returns: everyone it had comes back
				back := assignment(p, clients)
				for i := range before {
					if back[i] != before[i] {
						t.Fatalf("client %d on %s after re-add, was %s", i, back[i], before[i])
					}
				}

				added := Member{Address: "10.0.1.000:80", Weight: 1}
				p.SetMembers(SourceStatic, append(append([]Member{}, ms...), added))
				grown := assignment(p, clients)
				moved = 0
				for i := range before {
					if grown[i] != before[i] {
						moved++
						if grown[i] != added.Address {
							t.Fatalf("client %d moved %s -> %s, not to the new backend", i, before[i], grown[i])
						}
					}
				}
				want = 1 / float64(total+1)
				if got := float64(moved) / clients; math.Abs(got-want) > 0.02 {
					t.Errorf("adding 1 to %d moved %.3f of clients, want %.3f", n, got, want)
				}
			})
		}
	}
}

func TestIPHashWeightedShares(t *testing.T) {
	tests := [][]int{{1, 1, 1}, {3, 1, 1}, {1, 2, 3, 4}, {10, 1}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}}
	for _, ws := range tests {
		t.Run(fmt.Sprint(ws), func(t *testing.T) {
			p := newTestPool(t, Options{Algorithm: IPHash}, weighted(ws...))
			want := map[string]float64{}
			for i, w := range ws {
				want[addr(i)] = float64(w)
			}
			const n = 50_000
			checkShares(t, countPicks(p, n), n, want, 0.015)
		})
	}
}

func TestHashIP(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.7")
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")
	if HashIP(v4) != HashIP(mapped) {
		t.Error("IPv4 and its IPv4-mapped form hash differently")
	}
	if HashIP(v4) == HashIP(netip.MustParseAddr("192.0.2.8")) {
		t.Error("neighbouring addresses hash alike")
	}
	if HashIP(netip.MustParseAddr("2001:db8::1")) == HashIP(netip.MustParseAddr("2001:db8::2")) {
		t.Error("neighbouring IPv6 addresses hash alike")
	}
	if HashIP(v4) != HashIP(netip.MustParseAddr("192.0.2.7")) {
		t.Error("hash not deterministic")
	}
	_ = HashIP(netip.Addr{}) // an unparsable peer must not panic
}
