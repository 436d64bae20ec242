// Package cluster makes several kelpie processes behave as one: it
// registers an instance in Consul, shares fleet-wide drains through Consul's
// KV store, and elects one active instance of an active-passive group with
// a Consul session and lock, fenced on kelpie's own clock.
//
// Consul does the consensus; this package only keeps the rules of using it
// safely (see Lease for the fencing arithmetic).
package cluster

import "time"

// Role is an instance's place in an HA group.
type Role string

// The roles. A fenced instance believed it led, then lost contact with
// Consul for long enough that a standby may take over; it holds no virtual
// IP and must win a new lock (with a new session) to lead again.
const (
	RoleStandby Role = "standby"
	RoleLeader  Role = "leader"
	RoleFenced  Role = "fenced"
)

// Lease is the leader's view of its lock, on its own clock. It is a plain
// state machine with no goroutine and no clock of its own: the Elector
// feeds it events with their times, and tests feed it a fake clock.
//
// The arithmetic: the session is tied to one TTL check that only this
// instance passes. Consul's agent marks the check critical CheckTTL after it
// received the last pass, which is after this instance sent it; a critical
// check invalidates the session, and only then, after the lock-delay, can
// a standby acquire the lock. So a leader whose last acknowledged
// heartbeat was sent at S still holds the lock until at least S+CheckTTL,
// and no standby can hold it before S+CheckTTL+LockDelay. The session's
// own TTL is renewed less often (Consul promises not to expire it before
// the TTL). A leader that has not had both confirmed fences itself at
//
//	min(S_check+CheckTTL, S_session+SessionTTL) - Margin
//
// which leaves Margin+LockDelay between the old leader's last moment and
// the new leader's first. Not safe for concurrent use.
type Lease struct {
	// CheckTTL is the TTL of the session's check.
	CheckTTL time.Duration
	// SessionTTL is the session's TTL.
	SessionTTL time.Duration
	// Margin is how long before the earliest possible invalidation the
	// leader fences itself; it covers a slow system call and rate drift.
	Margin time.Duration

	role        Role
	token       uint64
	since       time.Time
	checkSent   time.Time // send time of the last acknowledged check pass
	sessionSent time.Time // send time of the last acknowledged session renewal
}

// Role returns the current role; the zero Lease is a standby.
func (l *Lease) Role() Role {
	if l.role == "" {
		return RoleStandby
	}
	return l.role
}

// Token is the fencing token (the lock's LockIndex) of the current or last
// leadership; 0 before the first.
func (l *Lease) Token() uint64 { return l.token }

// Since is when the current role began.
func (l *Lease) Since() time.Time { return l.since }

// CheckPassed records a check pass acknowledged by the agent; sent is when
// it was sent. Standbys record them too: they start leading with the
// times of their last confirmations.
func (l *Lease) CheckPassed(sent time.Time) {
	if sent.After(l.checkSent) {
		l.checkSent = sent
	}
}

// SessionRenewed records a session renewal (or creation) acknowledged by
// Consul; sent is when it was sent.
func (l *Lease) SessionRenewed(sent time.Time) {
	if sent.After(l.sessionSent) {
		l.sessionSent = sent
	}
}

// Deadline is when a leader must have fenced itself: the earliest moment
// the session might be invalidated, less Margin.
func (l *Lease) Deadline() time.Time {
	d := l.checkSent.Add(l.CheckTTL)
	if s := l.sessionSent.Add(l.SessionTTL); s.Before(d) {
		d = s
	}
	return d.Add(-l.Margin)
}

// Acquired records that the lock was won with LockIndex token at now. It
// returns false, leaving the role unchanged, when the lease's confirmations
// are already too old to lead on (the acquire answer came too late): the
// caller must then release the lock.
func (l *Lease) Acquired(now time.Time, token uint64) bool {
	if !now.Before(l.Deadline()) {
		return false
	}
	if l.Role() != RoleLeader {
		l.set(RoleLeader, now)
	}
	l.token = token
	return true
}

// Lost records that Consul says the lock is no longer this session's (the
// key changed hands, the session was invalidated or released). A leader or
// a fenced instance becomes a standby; it reports whether the role changed.
func (l *Lease) Lost(now time.Time) bool {
	if l.Role() == RoleStandby {
		return false
	}
	l.set(RoleStandby, now)
	return true
}

// Tick checks the clock: a leader past its Deadline becomes fenced. It
// reports whether the role changed.
func (l *Lease) Tick(now time.Time) bool {
	if l.Role() != RoleLeader || now.Before(l.Deadline()) {
		return false
	}
	l.set(RoleFenced, now)
	return true
}

func (l *Lease) set(r Role, now time.Time) {
	l.role, l.since = r, now
}
