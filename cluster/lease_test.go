package cluster

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func newLease() *Lease {
	return &Lease{CheckTTL: 1500 * time.Millisecond, SessionTTL: 10 * time.Second, Margin: 375 * time.Millisecond}
}

func TestLeaseZeroIsStandby(t *testing.T) {
	var l Lease
	if l.Role() != RoleStandby || l.Token() != 0 {
		t.Fatalf("zero lease: role %s token %d", l.Role(), l.Token())
	}
	if l.Tick(at(time.Hour)) {
		t.Fatal("a standby cannot be fenced")
	}
}

func TestLeaseFencesBeforeCheckCanExpire(t *testing.T) {
	l := newLease()
	l.SessionRenewed(at(0))
	l.CheckPassed(at(0))
	if !l.Acquired(at(100*time.Millisecond), 42) {
		t.Fatal("fresh lease refused")
	}
	if l.Role() != RoleLeader || l.Token() != 42 || !l.Since().Equal(at(100*time.Millisecond)) {
		t.Fatalf("after acquire: %s %d %v", l.Role(), l.Token(), l.Since())
	}
	// Passes keep it alive well past one CheckTTL.
	for ms := 375; ms <= 3000; ms += 375 {
		l.CheckPassed(at(time.Duration(ms) * time.Millisecond))
		if l.Tick(at(time.Duration(ms)*time.Millisecond + 300*time.Millisecond)) {
			t.Fatalf("fenced at %dms although passes arrive", ms)
		}
	}
	// Last pass sent at 3000ms: the check may expire at 4500ms; fence at
	// 4125ms, not a nanosecond later.
	if got, want := l.Deadline(), at(4125*time.Millisecond); !got.Equal(want) {
		t.Fatalf("deadline %v, want %v", got, want)
	}
	if l.Tick(at(4125*time.Millisecond - time.Nanosecond)) {
		t.Fatal("fenced before the deadline")
	}
	if !l.Tick(at(4125*time.Millisecond)) || l.Role() != RoleFenced {
		t.Fatalf("not fenced at the deadline: %s", l.Role())
	}
	if l.Token() != 42 {
		t.Fatal("fencing lost the token")
	}
	// A late pass does not unfence: leading again needs a confirmed lock.
	l.CheckPassed(at(4200 * time.Millisecond))
	if l.Tick(at(4300*time.Millisecond)) || l.Role() != RoleFenced {
		t.Fatalf("role %s after a late pass", l.Role())
	}
}

func TestLeaseSessionTTLBoundsTheLease(t *testing.T) {
	l := newLease()
	l.SessionRenewed(at(0))
	l.CheckPassed(at(0))
	l.Acquired(at(0), 7)
	// The agent keeps taking check passes (a Consul election on the
	// servers does not stop it) but no renewal reaches the servers.
	for ms := 0; ms < 20000; ms += 375 {
		now := at(time.Duration(ms) * time.Millisecond)
		l.CheckPassed(now)
		if l.Tick(now) {
			if want := at(10*time.Second - 375*time.Millisecond); now.Before(want) {
				t.Fatalf("fenced at %v, before %v", now, want)
			}
			if now.Sub(at(10*time.Second-375*time.Millisecond)) >= 375*time.Millisecond {
				t.Fatalf("fenced late at %v", now)
			}
			return
		}
	}
	t.Fatal("never fenced although the session was not renewed for 20s")
}

func TestLeaseRefusesStaleAcquire(t *testing.T) {
	l := newLease()
	l.SessionRenewed(at(0))
	l.CheckPassed(at(0))
	// The acquire answer arrives after the deadline: leading now would
	// overlap a standby that took over.
	if l.Acquired(at(1200*time.Millisecond), 3) {
		t.Fatal("acquired on a stale lease")
	}
	if l.Role() != RoleStandby {
		t.Fatalf("role %s", l.Role())
	}
}

func TestLeaseLostAndResume(t *testing.T) {
	l := newLease()
	l.SessionRenewed(at(0))
	l.CheckPassed(at(0))
	l.Acquired(at(0), 9)
	if !l.Tick(at(2 * time.Second)) {
		t.Fatal("not fenced")
	}
	// Consul is back and the same session still holds the lock: resuming
	// is safe, nobody else can have held it.
	l.SessionRenewed(at(5 * time.Second))
	l.CheckPassed(at(5 * time.Second))
	if !l.Acquired(at(5*time.Second+10*time.Millisecond), 9) || l.Role() != RoleLeader {
		t.Fatalf("no resume: %s", l.Role())
	}
	if !l.Lost(at(6*time.Second)) || l.Role() != RoleStandby {
		t.Fatalf("lost: %s", l.Role())
	}
	if l.Lost(at(7 * time.Second)) {
		t.Fatal("a standby reported losing again")
	}
}

func TestLeaseOldConfirmationsDoNotMoveBack(t *testing.T) {
	l := newLease()
	l.CheckPassed(at(2 * time.Second))
	l.CheckPassed(at(1 * time.Second)) // a slow answer to an older pass
	l.SessionRenewed(at(2 * time.Second))
	if got, want := l.Deadline(), at(2*time.Second+1500*time.Millisecond-375*time.Millisecond); !got.Equal(want) {
		t.Fatalf("deadline %v, want %v", got, want)
	}
}
