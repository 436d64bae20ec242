package balancer

import (
	"sync/atomic"
	"time"
)

// Detection mechanisms: which of kelpie's health mechanisms took a backend
// out of rotation.
const (
	MechanismActive    = "active"    // active probes (ReasonUnhealthy)
	MechanismPassive   = "passive"   // passive outlier detection (ReasonEjected, ReasonSlow, ReasonErrors)
	MechanismBreaker   = "breaker"   // the circuit breaker (ReasonBreakerOpen)
	MechanismHeartbeat = "heartbeat" // heartbeat checks (ReasonHeartbeatMissed)
)

// HealthReasons are the reasons kelpie's own failure detection sets.
const HealthReasons = ReasonUnhealthy | ReasonEjected | ReasonSlow | ReasonErrors | ReasonBreakerOpen | ReasonHeartbeatMissed

// IncidentObserver receives a pool's time to detect, time to recover and
// failovers, measured on real incidents. Its methods are called with the
// pool's writer lock held: they must be quick and must not call the pool.
type IncidentObserver interface {
	// Detected: b left rotation for a health reason found by mechanism, d
	// after the first failure seen on it (a failed probe or a gateway
	// error; 0 when none was seen, as when discovery took it out).
	Detected(b *Backend, mechanism string, d time.Duration)
	// Recovered: b, which had left rotation for a health reason, is back
	// in full rotation (slow start included) d after it left.
	Recovered(b *Backend, d time.Duration)
	// Failover: the pool's traffic moved to the backup tier (TierBackup)
	// or back to the primaries (TierPrimary).
	Failover(to Tier)
}

// incident is a backend's failure-timing state.
type incident struct {
	probeFail   atomic.Int64 // unix nanos of the first failed probe since the last pass; 0 = none
	trafficFail atomic.Int64 // unix nanos of the first gateway error since the last success; 0 = none

	leftAt int64 // unix nanos it left rotation for a health reason; 0 = in rotation. Under Pool.mu.

	lastDetect  atomic.Int64           // the last time to detect, nanoseconds; -1 = never
	lastMech    atomic.Pointer[string] // its mechanism
	lastRecover atomic.Int64           // the last time to recover, nanoseconds; -1 = never
}

// NoteProbe records an active probe's result: the first failure of a run
// starts the detection clock; a pass stops the probes' one.
func (b *Backend) NoteProbe(ok bool) {
	if ok {
		if b.inc.probeFail.Load() != 0 {
			b.inc.probeFail.Store(0)
		}
		return
	}
	if b.inc.probeFail.Load() == 0 {
		b.inc.probeFail.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// noteResult is NoteProbe for traffic, called by Release: one atomic load
// in the steady state.
func (b *Backend) noteResult(r Result) {
	switch {
	case r.GatewayError():
		if b.inc.trafficFail.Load() == 0 {
			b.inc.trafficFail.CompareAndSwap(0, time.Now().UnixNano())
		}
	case r == ResultOK:
		if b.inc.trafficFail.Load() != 0 {
			b.inc.trafficFail.Store(0)
		}
	}
}

// LastDetection returns the backend's last time to detect and its
// mechanism; ok is false when it never left rotation for a health reason.
func (b *Backend) LastDetection() (d time.Duration, mechanism string, ok bool) {
	m := b.inc.lastMech.Load()
	if m == nil {
		return 0, "", false
	}
	return time.Duration(b.inc.lastDetect.Load()), *m, true
}

// LastRecovery returns the backend's last time to recover; ok is false when
// it never recovered from a health exit.
func (b *Backend) LastRecovery() (time.Duration, bool) {
	d := b.inc.lastRecover.Load()
	return time.Duration(d), d >= 0
}

// Mechanism names the mechanism behind health reasons set together; active
// probes first, as they are what an operator configured to decide. Passive
// covers the consecutive-error, latency and success-rate ejections.
func Mechanism(set Reason) string {
	switch {
	case set&ReasonUnhealthy != 0:
		return MechanismActive
	case set&(ReasonEjected|ReasonSlow|ReasonErrors) != 0:
		return MechanismPassive
	case set&ReasonHeartbeatMissed != 0:
		return MechanismHeartbeat
	}
	return MechanismBreaker
}

// noteTransition measures detection and recovery at a change of b's
// reasons from was to now. Called with mu held.
func (p *Pool) noteTransition(b *Backend, was, now Reason) {
	at := p.opts.Now().UnixNano()
	if was&HealthReasons == 0 && now&HealthReasons != 0 && b.inc.leftAt == 0 {
		first := b.inc.probeFail.Load()
		if t := b.inc.trafficFail.Load(); t != 0 && (first == 0 || t < first) {
			first = t
		}
		var d time.Duration
		if first != 0 && first < at {
			d = time.Duration(at - first)
		}
		mech := Mechanism(now &^ was)
		b.inc.leftAt = at
		b.inc.lastDetect.Store(int64(d))
		b.inc.lastMech.Store(&mech)
		if p.opts.Incidents != nil {
			p.opts.Incidents.Detected(b, mech, d)
		}
		return
	}
	if now == 0 && b.inc.leftAt != 0 {
		d := time.Duration(at-b.inc.leftAt) + p.opts.SlowStart
		b.inc.leftAt = 0
		b.inc.probeFail.Store(0)
		b.inc.trafficFail.Store(0)
		b.inc.lastRecover.Store(int64(d))
		if p.opts.Incidents != nil {
			p.opts.Incidents.Recovered(b, d)
		}
	}
}

// noteTier reports a failover when a rebuild moved traffic to the backup
// tier or back. Called with mu held.
func (p *Pool) noteTier(old, cur *Snapshot) {
	if p.opts.Incidents == nil || old == nil || old.Tier == cur.Tier {
		return
	}
	switch {
	case cur.Tier == TierBackup:
		p.opts.Incidents.Failover(TierBackup)
	case old.Tier == TierBackup && (cur.Tier == TierPrimary || cur.Tier == TierPanic):
		p.opts.Incidents.Failover(TierPrimary)
	}
}
