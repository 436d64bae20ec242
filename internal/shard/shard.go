// Package shard spreads a counter that every core writes on every request
// over cache lines of its own, so that two cores adding at once do not pass
// one line back and forth (on the 2-CPU VM an add to a line the other core
// just wrote costs 5-10 times an uncontended one: bench/README.md, "Two
// threads: what the request path shares").
//
// Go has no public per-P (per-core) index, so an add picks its shard at
// random, from the runtime's per-thread generator: no shared state, a few
// nanoseconds. With C cores adding at once, an add meets another core's on
// its line with probability about (C-1)/Count. Readers sum the shards.
package shard

import "math/rand/v2"

// Count is how many shards a sharded counter has: 16 keeps two cores apart
// 15 times in 16 for 16 cache lines (1 KiB) per counter block.
const Count = 16

// Pick returns the shard an add goes to, in [0, Count).
func Pick() int { return int(rand.Uint32() % Count) }
