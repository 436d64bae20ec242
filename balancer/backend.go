// Package balancer holds kelpie's shared core: the long-lived Backend with its
// per-request counters, the Pool of one upstream with its immutable Snapshot
// published through an atomic pointer, and the picking algorithms
// (round_robin, least_conn, ip_hash).
//
// Control-plane writers (discovery, health, admin) change a Pool through its
// methods; each change rebuilds a Snapshot under the pool's writer mutex and
// swaps it in. The data path only loads the snapshot and picks: no lock, no
// allocation.
package balancer

import (
	"strings"
	"sync/atomic"
)

// Reason is one cause for a backend to be out of rotation. A backend with no
// reason set is eligible (subject to the backup and panic rules of its pool).
type Reason uint32

// The reasons, one bit each. Several may be set at once; each is set and
// cleared by exactly one owner.
const (
	ReasonUnhealthy   Reason = 1 << iota // active probes failed `fall` times in a row (health)
	ReasonEjected                        // passive outlier detection ejected it (health)
	ReasonBreakerOpen                    // its circuit breaker is open (health)
	ReasonDrain                          // an operator drained it (admin)
	ReasonCritical                       // discovery reports it failing or in maintenance (discovery)
	ReasonRemoved                        // no source lists it any more; in-flight requests finish

	numReasons = iota
)

var reasonNames = [numReasons]string{"unhealthy", "ejected", "breaker_open", "drain", "critical", "removed"}

// String names the reason ("unhealthy", "ejected", "breaker_open", "drain",
// "critical", "removed"); several bits are joined with "+".
func (r Reason) String() string {
	if r == 0 {
		return "none"
	}
	var parts []string
	for i := range numReasons {
		if r&(1<<i) != 0 {
			parts = append(parts, reasonNames[i])
		}
	}
	return strings.Join(parts, "+")
}

// Health is what active probing last concluded about a backend.
type Health uint32

// Health values. A backend starts Unknown; without active probing it stays so.
const (
	HealthUnknown Health = iota
	HealthHealthy
	HealthUnhealthy
)

func (h Health) String() string {
	switch h {
	case HealthHealthy:
		return "healthy"
	case HealthUnhealthy:
		return "unhealthy"
	}
	return "unknown"
}

// BreakerState mirrors a backend's circuit breaker for display.
type BreakerState uint32

// Breaker states, as gobreaker names them.
const (
	BreakerClosed BreakerState = iota
	BreakerHalfOpen
	BreakerOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return "closed"
}

// Result is what one attempt at a backend came to, as the data path saw it.
type Result uint8

// Results. Only gateway errors count against a backend; ResultLocal covers
// outcomes that are not the backend's fault (the client went away, kelpie
// refused the request) and must never count either way.
const (
	ResultOK            Result = iota // a response the backend meant to send (any status but 502/503/504)
	ResultGatewayStatus               // the backend answered 502, 503 or 504
	ResultConnectFailed               // dial refused or timed out: nothing was sent
	ResultReset                       // connection reset or closed before a whole response
	ResultTimeout                     // no response head within the response timeout
	ResultLocal                       // not the backend's doing; neither success nor failure
)

// GatewayError reports whether r is a failure of the backend (connect failure,
// reset, timeout, 502, 503 or 504).
func (r Result) GatewayError() bool {
	return r >= ResultGatewayStatus && r <= ResultTimeout
}

func (r Result) String() string {
	return [...]string{"ok", "gateway_status", "connect_failed", "reset", "timeout", "local"}[r]
}

// Guard admits or refuses requests to one backend and learns from their
// results: the health layer's circuit breaker and passive outlier detector.
// Admit is called on the data path once per attempt; when it returns a nil
// error, done must be called exactly once with the attempt's result. A
// non-nil error means "pick another backend", never a client error.
type Guard interface {
	Admit() (done func(Result), err error)
}

// Backend is one member of an upstream, identified by its address. It lives
// as long as its address stays in the pool, across snapshot rebuilds, so its
// counters, circuit breaker and connection pool survive membership and
// health changes. Safe for concurrent use; do not copy.
type Backend struct {
	addr string
	hash uint64 // fixed per address: the rendezvous-hashing seed

	down     atomic.Uint32 // Reason bits
	health   atomic.Uint32 // Health
	breaker  atomic.Uint32 // BreakerState
	weight   atomic.Int32  // effective configured weight (override or source)
	override atomic.Int32  // admin weight override; 0 = none
	backup   atomic.Bool
	sources  atomic.Uint32 // bit per Source listing it

	inFlight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	codes    [600]atomic.Uint64 // responses by status code (kelpie's own 502/504 included)

	transitions [numReasons][2]atomic.Uint64 // [reason][0=set,1=cleared]

	eligibleSince atomic.Int64 // unix nanos the backend last became eligible; 0 = from the start

	guard atomic.Pointer[guardBox]
}

type guardBox struct{ g Guard }

func newBackend(addr string) *Backend {
	b := &Backend{addr: addr, hash: hashString(addr)}
	b.weight.Store(1)
	return b
}

// Address is the backend's "host:port".
func (b *Backend) Address() string { return b.addr }

// Down reports the reasons the backend is out of rotation (0 when none).
func (b *Backend) Down() Reason { return Reason(b.down.Load()) }

// Health reports what active probing last concluded.
func (b *Backend) Health() Health { return Health(b.health.Load()) }

// Breaker reports the breaker state last published by the health layer.
func (b *Backend) Breaker() BreakerState { return BreakerState(b.breaker.Load()) }

// SetBreakerState records the breaker state for display. Eligibility follows
// ReasonBreakerOpen, set through Pool.Mark.
func (b *Backend) SetBreakerState(s BreakerState) { b.breaker.Store(uint32(s)) }

// Weight is the configured weight (the admin override when one is set).
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// Backup reports whether the backend only serves when no primary is eligible.
func (b *Backend) Backup() bool { return b.backup.Load() }

// Sources reports which sources list the backend.
func (b *Backend) Sources() Source { return Source(b.sources.Load()) }

// InFlight is the number of requests the data path has acquired and not yet
// released on this backend.
func (b *Backend) InFlight() int64 { return b.inFlight.Load() }

// Requests is the number of finished attempts on this backend.
func (b *Backend) Requests() uint64 { return b.requests.Load() }

// Failures is the number of attempts that ended in a gateway error.
func (b *Backend) Failures() uint64 { return b.failures.Load() }

// Codes calls fn for each status code this backend's attempts have produced,
// with its count.
func (b *Backend) Codes(fn func(code int, n uint64)) {
	for c := range b.codes {
		if n := b.codes[c].Load(); n > 0 {
			fn(c, n)
		}
	}
}

// Transitions calls fn for each reason with how often it was set (on=true)
// and cleared (on=false).
func (b *Backend) Transitions(fn func(r Reason, on bool, n uint64)) {
	for i := range numReasons {
		if n := b.transitions[i][0].Load(); n > 0 {
			fn(Reason(1<<i), true, n)
		}
		if n := b.transitions[i][1].Load(); n > 0 {
			fn(Reason(1<<i), false, n)
		}
	}
}

// Acquire counts a new request in flight. It returns false, counting
// nothing, when the backend was drained or removed after it was picked: the
// caller must pick again. Together with Pool.Mark publishing before the admin
// API replies, this guarantees a drained backend receives no request that
// began after the drain.
func (b *Backend) Acquire() bool {
	b.inFlight.Add(1)
	if Reason(b.down.Load())&(ReasonDrain|ReasonRemoved) != 0 {
		b.inFlight.Add(-1)
		return false
	}
	return true
}

// Release ends a request counted by Acquire and records its result. status
// is the HTTP status the attempt produced (kelpie's own 502/504 for errors),
// or 0 when none.
func (b *Backend) Release(status int, r Result) {
	b.inFlight.Add(-1)
	if r == ResultLocal {
		return
	}
	b.requests.Add(1)
	if r.GatewayError() {
		b.failures.Add(1)
	}
	if status > 0 && status < len(b.codes) {
		b.codes[status].Add(1)
	}
}

// SetGuard installs the backend's guard (breaker and passive detector).
func (b *Backend) SetGuard(g Guard) { b.guard.Store(&guardBox{g}) }

// Guard returns the installed guard, or nil.
func (b *Backend) Guard() Guard {
	if gb := b.guard.Load(); gb != nil {
		return gb.g
	}
	return nil
}

func noopDone(Result) {}

// Admit asks the backend's guard to let one attempt through. Without a guard
// it always admits, with a done func that does nothing.
func (b *Backend) Admit() (done func(Result), err error) {
	if gb := b.guard.Load(); gb != nil {
		return gb.g.Admit()
	}
	return noopDone, nil
}

// AdminState is the operator-facing drain state.
type AdminState uint8

// Admin states: ready; draining (drained, requests still in flight);
// drained (drained and idle).
const (
	AdminReady AdminState = iota
	AdminDraining
	AdminDrained
)

func (s AdminState) String() string {
	return [...]string{"ready", "draining", "drained"}[s]
}

// Admin reports the backend's admin state.
func (b *Backend) Admin() AdminState {
	if b.Down()&ReasonDrain == 0 {
		return AdminReady
	}
	if b.InFlight() > 0 {
		return AdminDraining
	}
	return AdminDrained
}
