package balancer

import (
	"strings"
	"testing"
)

// smoothWRR is nginx's smooth weighted round robin run live, the reference
// the precomputed schedule must reproduce pick for pick.
func smoothWRR(ws []int, n int) []int {
	cur := make([]int, len(ws))
	total := 0
	for _, w := range ws {
		total += w
	}
	out := make([]int, 0, n)
	for range n {
		best := -1
		for i, w := range ws {
			cur[i] += w
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		out = append(out, best)
	}
	return out
}

// letters renders a pick sequence as "abaca" (addr(0) = a, ...).
func letters(p *Pool, n int) string {
	var sb strings.Builder
	for range n {
		b := p.Pick(0, nil)
		if b == nil {
			sb.WriteByte('-')
			continue
		}
		for i := range 26 {
			if b.Address() == addr(i) {
				sb.WriteByte(byte('a' + i))
			}
		}
	}
	return sb.String()
}

func TestRoundRobinCycle(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		want    string // two whole cycles
	}{
		{"single", []int{1}, "aa"},
		{"equal", []int{1, 1, 1}, "abcabc"},
		{"3:1:1 interleaved", []int{3, 1, 1}, "abacaabaca"},
		{"2:1", []int{2, 1}, "abaaba"},
		{"5:1", []int{5, 1}, "aaabaaaaabaa"},
		{"common factor 4:2:2 is 2:1:1", []int{4, 2, 2}, "abcaabca"},
		{"zero weight means 1", []int{0, 1}, "abab"},
		{"equal heavy", []int{7, 7}, "abab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPool(t, Options{Algorithm: RoundRobin}, weighted(tt.weights...))
			if got := letters(p, len(tt.want)); got != tt.want {
				t.Errorf("picks %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRoundRobinMatchesSmoothWRR checks the precomputed schedule against
// nginx's algorithm for weight sets without a neat pattern, and that each
// whole cycle gives every backend exactly its weight.
func TestRoundRobinMatchesSmoothWRR(t *testing.T) {
	for _, ws := range [][]int{
		{3, 1, 1}, {5, 3, 2}, {7, 1, 1, 1}, {1, 2, 3, 4, 5}, {10, 1}, {13, 8, 5, 3, 2, 1, 1},
	} {
		p := newTestPool(t, Options{}, weighted(ws...))
		total := 0
		for _, w := range ws {
			total += w
		}
		want := smoothWRR(ws, 3*total)
		counts := make([]int, len(ws))
		for k, wi := range want {
			b := p.Pick(0, nil)
			if b.Address() != addr(wi) {
				t.Fatalf("weights %v: pick %d is %s, want %s", ws, k, b.Address(), addr(wi))
			}
			counts[wi]++
		}
		for i, w := range ws {
			if counts[i] != 3*w {
				t.Errorf("weights %v: %s got %d of 3 cycles, want %d", ws, addr(i), counts[i], 3*w)
			}
		}
	}
}

// TestRoundRobinNoBursts: with 3:1:1 the heavy backend never gets two picks
// in a row across cycle boundaries either.
func TestRoundRobinNoBursts(t *testing.T) {
	p := newTestPool(t, Options{}, weighted(3, 1, 1))
	seq := letters(p, 500)
	if strings.Contains(seq, "aaa") || strings.Contains(seq, "bb") || strings.Contains(seq, "cc") {
		t.Errorf("bursts in %q", seq)
	}
	counts := countPicks(p, 5000)
	if counts[addr(0)] != 3000 || counts[addr(1)] != 1000 || counts[addr(2)] != 1000 {
		t.Errorf("3:1:1 over 5000 picks: %v, want 3000/1000/1000", counts)
	}
}

// TestRoundRobinHeavyWeights: weight sets whose cycle exceeds maxSchedule
// are scaled down but keep their proportions.
func TestRoundRobinHeavyWeights(t *testing.T) {
	p := newTestPool(t, Options{}, weighted(MaxWeight, MaxWeight-1, 3000, 1))
	if got := len(p.Snapshot().active.sel.(*roundRobin).sched); got > maxSchedule+4 {
		t.Fatalf("schedule length %d, want at most %d", got, maxSchedule+4)
	}
	const n = 200_000
	checkShares(t, countPicks(p, n), n, map[string]float64{
		addr(0): MaxWeight, addr(1): MaxWeight - 1, addr(2): 3000, addr(3): 1,
	}, 0.002)
}

// TestRoundRobinCursorSurvivesRebuild: a snapshot rebuild that does not
// change the set (a weightless refresh, a health flip elsewhere) does not
// restart the cycle at the first backend.
func TestRoundRobinCursorSurvivesRebuild(t *testing.T) {
	p := newTestPool(t, Options{}, equal(3))
	if got := letters(p, 2); got != "ab" {
		t.Fatalf("first picks %q", got)
	}
	p.SetMembers(SourceStatic, equal(3)) // same list: rebuild only
	if got := letters(p, 4); got != "cabc" {
		t.Errorf("after refresh %q, want %q", got, "cabc")
	}
}
