// Package balancer holds kelpie's shared core: the long-lived Backend with its
// per-request counters, the Pool of one upstream with its immutable Snapshot
// published through an atomic pointer, and the picking algorithms
// (round_robin, least_conn, ip_hash, hash, least_latency).
//
// Control-plane writers (discovery, health, admin) change a Pool through its
// methods; each change rebuilds a Snapshot under the pool's writer mutex and
// swaps it in. A backend's rotation state (health, breaker, ejection, drain,
// removal) is one immutable State value, replaced only by the pool's writer
// through Pool.Update. The data path only loads the snapshot and picks: no
// lock, no allocation.
package balancer

import (
	"strings"
	"sync/atomic"
	"time"
)

// Reason is one cause for a backend to be out of rotation. A backend with no
// reason set is eligible (subject to the backup and panic rules of its pool).
type Reason uint32

// The reasons, one bit each. Several may be set at once. They are derived
// from a backend's State (see State.Down), never stored on their own.
const (
	ReasonUnhealthy       Reason = 1 << iota // active probes failed `fall` times in a row (health)
	ReasonEjected                            // passive outlier detection ejected it (health)
	ReasonBreakerOpen                        // its circuit breaker is open (health)
	ReasonDrain                              // an operator drained it (admin)
	ReasonCritical                           // discovery reports it failing or in maintenance (discovery)
	ReasonRemoved                            // no source lists it any more; in-flight requests finish
	ReasonSlow                               // latency outlier detection ejected it (health)
	ReasonErrors                             // success-rate or failure-percentage detection ejected it (health)
	ReasonHeartbeatMissed                    // no heartbeat within the TTL (health)
	ReasonAwaitingReady                      // recovered under manual failback: waits for an operator's ready (pool)

	numReasons = iota
)

var reasonNames = [numReasons]string{"unhealthy", "ejected", "breaker_open", "drain", "critical", "removed", "slow", "errors",
	"heartbeat_missed", "awaiting_ready"}

// String names the reason ("unhealthy", "ejected", "breaker_open", "drain",
// "critical", "removed", "slow", "errors"); several bits are joined with "+".
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

// BreakerState is a backend's circuit breaker state as the health layer last
// published it. An open breaker keeps the backend out of rotation.
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

// State is a backend's rotation state: one immutable value per change,
// published by the pool's writer (Pool.Update) and read by anyone with
// Backend.State. Each field has one owner: Health the active prober,
// Breaker, Ejected, Slow and Errors the health layer, Drained the operator (admin API),
// Critical discovery, Removed the pool's membership. The reasons a backend
// is out of rotation (Down) are computed from it.
type State struct {
	Health   Health       // what active probing last concluded
	Breaker  BreakerState // the circuit breaker, as last published
	Ejected  bool         // passive outlier detection ejected it
	Drained  bool         // an operator drained it
	Critical bool         // discovery reports it failing or in maintenance
	Removed  bool         // no source lists it any more
	Slow     bool         // latency outlier detection ejected it
	Errors   bool         // success-rate or failure-percentage detection ejected it

	HeartbeatMissed bool // no heartbeat arrived within the TTL (health's heartbeat checks)
	AwaitingReady   bool // recovered from a health exit under manual failback; the pool sets it, an operator's ready clears it
	Degraded        bool // its script check warns (exit 1): eligible at 1/DegradedDivisor of its weight (health)

	eligibleSince int64 // unix nanos it last became eligible, for slow start; 0 = from the start
	drainedAt     int64 // unix nanos Drained was last set; 0 = unknown (restored, or drained while away)
}

// DrainedSince reports when an operator drained the backend, or the zero
// time when it is not drained or the moment is unknown (a drain restored
// from the state file, or set while the backend was away).
func (s State) DrainedSince() time.Time {
	if !s.Drained || s.drainedAt == 0 {
		return time.Time{}
	}
	return time.Unix(0, s.drainedAt)
}

// Down reports the reasons s keeps a backend out of rotation (0 when none).
func (s State) Down() Reason {
	var r Reason
	if s.Health == HealthUnhealthy {
		r |= ReasonUnhealthy
	}
	if s.Ejected {
		r |= ReasonEjected
	}
	if s.Breaker == BreakerOpen {
		r |= ReasonBreakerOpen
	}
	if s.Drained {
		r |= ReasonDrain
	}
	if s.Critical {
		r |= ReasonCritical
	}
	if s.Removed {
		r |= ReasonRemoved
	}
	if s.Slow {
		r |= ReasonSlow
	}
	if s.Errors {
		r |= ReasonErrors
	}
	if s.HeartbeatMissed {
		r |= ReasonHeartbeatMissed
	}
	if s.AwaitingReady {
		r |= ReasonAwaitingReady
	}
	return r
}

// Backend is one member of an upstream, identified by its address. It lives
// as long as its address stays in the pool, across snapshot rebuilds, so its
// counters, circuit breaker and connection pool survive membership and
// health changes. Safe for concurrent use; do not copy.
type Backend struct {
	addr string
	hash uint64 // fixed per address: the rendezvous-hashing seed

	// Written by the pool's writer only (under Pool.mu).
	state    atomic.Pointer[State]
	weight   atomic.Int32 // effective configured weight: override, else listed
	listed   atomic.Int32 // the weight its sources give
	override atomic.Int32 // admin weight override; 0 = none
	backup   atomic.Bool
	sources  atomic.Uint32 // bit per Source listing it

	// Written by the data path, on every attempt, from every core: kept on
	// cache lines of their own, so that the fields above and below, which
	// every pick and attempt reads (state, weight, guard, fault), are not
	// invalidated on the other cores by each of these writes (false
	// sharing; bench/README.md, "Two threads").
	_        cacheLinePad
	inFlight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	lat      latency // response latency and errors, for least_latency and outlier detection
	_        cacheLinePad
	recent   recent // the success rate over the last RecentWindow, for the admin API (read side only)

	transitions [numReasons][2]atomic.Uint64 // [reason][0=set,1=cleared]

	guard Guard // set once, before the backend is published; nil = admit all

	fault atomic.Pointer[Fault] // an injected fault (fault.go); nil = none
	inc   incident              // failure timings (incident.go)

	checkOutput atomic.Pointer[string] // the last active check's output (exec checks); health writes it
}

// cacheLinePad separates fields written on every request from those only
// read there; 64 bytes is the line size of the x86-64 and arm64 machines
// kelpie runs on (128 would cover adjacent-line prefetch at twice the cost).
type cacheLinePad [64]byte

func newBackend(addr string, st State) *Backend {
	b := &Backend{addr: addr, hash: hashString(addr)}
	b.state.Store(&st)
	b.inc.lastDetect.Store(-1)
	b.inc.lastRecover.Store(-1)
	b.weight.Store(1)
	b.listed.Store(1)
	return b
}

// Address is the backend's "host:port".
func (b *Backend) Address() string { return b.addr }

// State returns the backend's current rotation state (a copy).
func (b *Backend) State() State { return *b.state.Load() }

// Down reports the reasons the backend is out of rotation (0 when none).
func (b *Backend) Down() Reason { return b.state.Load().Down() }

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
// caller must pick again. Together with Pool.Drain publishing before the
// admin API replies, this guarantees a drained backend receives no request
// that began after the drain.
func (b *Backend) Acquire() bool {
	b.inFlight.Add(1)
	if st := b.state.Load(); st.Drained || st.Removed {
		b.inFlight.Add(-1)
		return false
	}
	return true
}

// AcquireDraining is Acquire for a request a sticky session pins to b: it
// also admits b while b was drained less than grace before now (a drain of
// unknown age counts as old), so sessions on a draining backend can finish.
// A removed backend is refused, as by Acquire.
func (b *Backend) AcquireDraining(grace time.Duration, now time.Time) bool {
	b.inFlight.Add(1)
	st := b.state.Load()
	if st.Removed || st.Drained && (st.drainedAt == 0 || now.UnixNano()-st.drainedAt >= int64(grace)) {
		b.inFlight.Add(-1)
		return false
	}
	return true
}

// Release ends a request counted by Acquire and records its result.
func (b *Backend) Release(r Result) {
	b.inFlight.Add(-1)
	if r == ResultLocal {
		return
	}
	b.noteResult(r)
	b.requests.Add(1)
	if r.GatewayError() {
		b.failures.Add(1)
	}
}

// Guard returns the guard Options.NewGuard made for the backend, or nil.
func (b *Backend) Guard() Guard { return b.guard }

func noopDone(Result) {}

// Admit asks the backend's guard to let one attempt through. Without a guard
// it always admits, with a done func that does nothing.
func (b *Backend) Admit() (done func(Result), err error) {
	if b.guard != nil {
		return b.guard.Admit()
	}
	return noopDone, nil
}

// AdminState is the operator-facing drain state.
type AdminState uint8

// Admin states: ready; draining (drained, requests still in flight);
// drained (drained and idle); awaiting_ready (recovered under manual
// failback, waiting for an operator's ready).
const (
	AdminReady AdminState = iota
	AdminDraining
	AdminDrained
	AdminAwaitingReady
)

func (s AdminState) String() string {
	return [...]string{"ready", "draining", "drained", "awaiting_ready"}[s]
}

// Admin reports the backend's admin state.
func (b *Backend) Admin() AdminState {
	st := b.state.Load()
	if !st.Drained {
		if st.AwaitingReady {
			return AdminAwaitingReady
		}
		return AdminReady
	}
	if b.InFlight() > 0 {
		return AdminDraining
	}
	return AdminDrained
}
