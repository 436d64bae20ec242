package shard

import (
	"runtime"
	"testing"
)

// TestPickIsThePs: the shard is the P's, not a random one: with one P
// every add goes to shard 0, and any shard is in range.
func TestPickIsThePs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for range 1000 {
		if s := Pick(); s != 0 {
			t.Fatalf("Pick() = %d with one P, want 0", s)
		}
	}
	runtime.GOMAXPROCS(Count + 3)
	done := make(chan int)
	for range 4 * Count {
		go func() { done <- Pick() }()
	}
	for range 4 * Count {
		if s := <-done; s < 0 || s >= Count {
			t.Fatalf("Pick() = %d, out of [0, %d)", s, Count)
		}
	}
}
