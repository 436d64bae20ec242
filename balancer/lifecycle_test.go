package balancer

import (
	"testing"
	"time"
)

func TestParseAlgorithm(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    Algorithm
		wantErr bool
	}{
		{"", RoundRobin, false}, {"round_robin", RoundRobin, false}, {"least_conn", LeastConn, false},
		{"ip_hash", IPHash, false}, {"random", 0, true}, {"IP_HASH", 0, true},
	} {
		got, err := ParseAlgorithm(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("ParseAlgorithm(%q) = %v, %v", tt.in, got, err)
		}
		if !tt.wantErr && got.String() != tt.in && tt.in != "" {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tt.in)
		}
	}
	if !IPHash.UsesKey() || RoundRobin.UsesKey() || LeastConn.UsesKey() {
		t.Error("UsesKey wrong")
	}
}

// TestChanged: the channel closes when a backend joins or leaves, not on
// health or weight changes.
func TestChanged(t *testing.T) {
	p := newTestPool(t, Options{}, equal(2))
	ch := p.Changed()
	mark(p, backend(t, p, addr(0)), ReasonUnhealthy, true)
	p.SetWeight(addr(1), 5)
	p.Drain(addr(1))
	select {
	case <-ch:
		t.Fatal("Changed closed without a membership change")
	default:
	}
	p.SetMembers(SourceStatic, equal(3))
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed when a backend joined")
	}
	ch = p.Changed()
	p.SetMembers(SourceStatic, equal(2))
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed when a backend left")
	}
}

// TestDrainSurvivesReload: a config reload (Reconfigure) and RestoreDrained
// at start keep drained backends out of rotation.
func TestDrainSurvivesReload(t *testing.T) {
	p := NewPool(Options{})
	defer p.Close()
	p.RestoreDrained([]string{addr(1), "10.9.9.9:80"}) // before the members exist
	p.SetMembers(SourceStatic, equal(3))
	if b := backend(t, p, addr(1)); b.Admin() != AdminDrained || b.Acquire() {
		t.Fatalf("restored drain not applied on join: %v", b.Admin())
	}
	p.Drain(addr(2))
	p.Reconfigure(Options{Algorithm: LeastConn, SlowStart: time.Second})
	got := countPicks(p, 300)
	if got[addr(0)] != 300 {
		t.Fatalf("after reload picks %v, want all on %s", got, addr(0))
	}
	if d := p.Drained(); len(d) != 3 {
		t.Fatalf("Drained() = %v", d)
	}
}
