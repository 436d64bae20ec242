// Package shard spreads a counter that every core writes on every request
// over cache lines of its own, one per P (the scheduler's per-core slot),
// so that two cores do not pass one line back and forth: on the 2-CPU VM an
// add to a line the other core just wrote costs 5-10 times an uncontended
// one (bench/README.md, "Two threads: what the request path shares").
// Readers sum the shards.
package shard

import _ "unsafe" // go:linkname

// Count is how many shards a sharded counter has: every P has its own up to
// GOMAXPROCS 16; past that, Ps share them, 2 or more to a shard.
const Count = 16

// Pick returns the shard an add on the calling goroutine goes to, in
// [0, Count): its P's. A goroutine may move to another P right after; the
// add then lands on a shard another P also uses, which costs one cache
// line transfer and is still counted exactly (the adds are atomic).
func Pick() int {
	p := procPin()
	procUnpin()
	return p % Count
}

// The runtime's P index, as sync.Pool gets it. Go has no public API for it;
// the runtime keeps these two reachable by linkname for the packages that
// use them (go.dev/issue/67401: "Do not remove or change the type
// signature"). Pinning is only for the read: the add happens unpinned.
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()
