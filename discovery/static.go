// Package discovery feeds pool membership from outside sources: a static
// list from the config file, or a Consul service kept current with blocking
// queries (see Consul).
//
// Sources only ever hand full member lists to a Sink; they never touch
// backends. *balancer.Pool is the Sink cmd/kelpie wires in, and the pool
// keeps a backend's state (connections, breaker, counters) across updates
// that keep its address.
package discovery

import "github.com/kelpie-lb/kelpie/balancer"

// Sink receives full member lists from one source. *balancer.Pool
// satisfies it. Implementations must be comparable (pointers are), because
// Consul keys its subscribers by Sink, and must not keep or modify ms after
// returning.
type Sink interface {
	SetMembers(src balancer.Source, ms []balancer.Member)
}

var _ Sink = (*balancer.Pool)(nil)

// Static hands a fixed member list (the config file's backends) to sink
// once, as balancer.SourceStatic. Calling it again with another list
// replaces the static members, as a config reload does.
func Static(sink Sink, ms []balancer.Member) {
	sink.SetMembers(balancer.SourceStatic, ms)
}
