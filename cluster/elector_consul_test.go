package cluster

import (
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// leaderOf starts a and b and returns them as (leader, standby).
func leaderOf(t *testing.T, a, b *member) (*member, *member) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sa, sb := a.el.Status(), b.el.Status()
		switch {
		case sa.Role == RoleLeader && sb.Role == RoleStandby && sb.Leader == a.id:
			return a, b
		case sb.Role == RoleLeader && sa.Role == RoleStandby && sa.Leader == b.id:
			return b, a
		}
		select {
		case <-a.ch:
		case <-b.ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("no single leader: %+v / %+v", a.el.Status(), b.el.Status())
	return nil, nil
}

func TestElectorOneLeaderAndCleanHandover(t *testing.T) {
	agent := needConsul(t)
	a := startMember(t, agent, "kelpie-a", "kelpie/test/leader", nil)
	b := startMember(t, agent, "kelpie-b", "kelpie/test/leader", nil)
	leader, standby := leaderOf(t, a, b)
	tok := leader.el.Status().FencingToken
	if tok == 0 {
		t.Fatal("leader without a fencing token")
	}
	if st := standby.el.Status(); st.Leader != leader.id {
		t.Fatalf("standby sees leader %q, want %q", st.Leader, leader.id)
	}
	stopped := time.Now()
	leader.stop() // clean: releases the lock, no lock-delay
	took := standby.waitRole(t, RoleLeader, 5*time.Second).Sub(stopped)
	t.Logf("clean handover took %v", took)
	if took > time.Second {
		t.Errorf("clean handover took %v, want under 1s", took)
	}
	if got := standby.el.Status().FencingToken; got <= tok {
		t.Errorf("new fencing token %d not above the old %d", got, tok)
	}
	noOverlap(t, a, b)
}

// TestElectorLeaderCutOff cuts the leader from Consul, which from Consul's
// side is also what a killed leader looks like: the standby must lead
// within 3s, and the old leader must have fenced itself before that.
func TestElectorLeaderCutOff(t *testing.T) {
	agent := needConsul(t)
	a := startMember(t, agent, "kelpie-a", "kelpie/test/leader", nil)
	b := startMember(t, agent, "kelpie-b", "kelpie/test/leader", nil)
	leader, standby := leaderOf(t, a, b)

	// Sample both every 50ms, as a client of the VIP would.
	stopSampling := make(chan struct{})
	sampled := make(chan int)
	go func() {
		both := 0
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				sampled <- both
				return
			case <-tick.C:
				if a.el.Status().Role == RoleLeader && b.el.Status().Role == RoleLeader {
					both++
				}
			}
		}
	}()

	cut := time.Now()
	leader.cut.Cut()
	fenced := leader.waitRole(t, RoleFenced, 5*time.Second)
	took := standby.waitRole(t, RoleLeader, 10*time.Second)
	close(stopSampling)
	if n := <-sampled; n != 0 {
		t.Errorf("%d samples saw two leaders", n)
	}
	t.Logf("cut at 0: old leader fenced after %v, standby led after %v (gap %v)",
		fenced.Sub(cut), took.Sub(cut), took.Sub(fenced))
	if !fenced.Before(took) {
		t.Errorf("old leader fenced at %v, after the standby led at %v", fenced, took)
	}
	if d := took.Sub(cut); d > 3*time.Second {
		t.Errorf("standby took %v to lead, want under 3s", d)
	}
	noOverlap(t, a, b)

	// Healed, the old leader gets a new session and stays standby (no
	// preemption): the new leader keeps the lock.
	leader.cut.Heal()
	leader.waitRole(t, RoleStandby, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for leader.el.Status().Leader != standby.id {
		if time.Now().After(deadline) {
			t.Fatalf("healed member sees leader %q", leader.el.Status().Leader)
		}
		select {
		case <-leader.ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
	if standby.el.Status().Role != RoleLeader {
		t.Fatalf("leadership moved back: %+v", standby.el.Status())
	}
	noOverlap(t, a, b)
}

func TestElectorPreempt(t *testing.T) {
	agent := needConsul(t)
	a := startMember(t, agent, "kelpie-a", "kelpie/test/leader", func(o *ElectorOptions) { o.Priority = 100 })
	a.waitRole(t, RoleLeader, 10*time.Second)
	b := startMember(t, agent, "kelpie-b", "kelpie/test/leader", func(o *ElectorOptions) { o.Priority = 150 })
	// Without preempt a higher priority waits its turn.
	deadline := time.Now().Add(10 * time.Second)
	for b.el.Status().Leader != "kelpie-a" {
		if time.Now().After(deadline) {
			t.Fatalf("b never saw a lead: %+v", b.el.Status())
		}
		time.Sleep(20 * time.Millisecond) // no event for what b sees
	}
	time.Sleep(time.Second) // nothing may happen: give it the chance
	if a.el.Status().Role != RoleLeader || b.el.Status().Role != RoleStandby {
		t.Fatalf("without preempt: a %+v, b %+v", a.el.Status(), b.el.Status())
	}

	started := time.Now()
	c := startMember(t, agent, "kelpie-c", "kelpie/test/leader", func(o *ElectorOptions) { o.Priority = 200; o.Preempt = true })
	took := c.waitRole(t, RoleLeader, 10*time.Second).Sub(started)
	t.Logf("preempting member led %v after it started", took)
	if a.el.Status().Role != RoleStandby {
		t.Errorf("a after preemption: %+v", a.el.Status())
	}
	noOverlap(t, a, b, c)

	// c leaves: a lower-priority member leads again.
	c.stop()
	deadline = time.Now().Add(5 * time.Second)
	for a.el.Status().Role != RoleLeader && b.el.Status().Role != RoleLeader {
		if time.Now().After(deadline) {
			t.Fatalf("nobody leads after c left: %+v %+v", a.el.Status(), b.el.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	noOverlap(t, a, b, c)
}

// TestElectorRestartAfterCrash: a member that died without shutting down
// (cut off, then stopped, so nothing reaches Consul) leaves its check
// critical; the same instance started again must get a session and lead.
// Consul keeps an existing check's status on re-registration, so a
// registration alone left the check critical and Consul refused every
// session tied to it: the restarted instance never led (found by the
// container HA suite, TestContainerHA).
func TestElectorRestartAfterCrash(t *testing.T) {
	agent := needConsul(t)
	a := startMember(t, agent, "kelpie-a", "kelpie/test/leader", nil)
	a.waitRole(t, RoleLeader, 10*time.Second)
	a.cut.Cut()
	a.stop() // its shutdown cannot reach Consul: a crash, as Consul sees it
	deadline := time.Now().Add(15 * time.Second)
	for {
		checks, err := agent.Client.Agent().Checks()
		if err == nil && checks[a.el.CheckID()] != nil && checks[a.el.CheckID()].Status == api.HealthCritical {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check %s not critical: %v", a.el.CheckID(), err)
		}
		time.Sleep(50 * time.Millisecond) // no event for a TTL running out
	}
	again := startMember(t, agent, "kelpie-a", "kelpie/test/leader", nil)
	again.waitRole(t, RoleLeader, 10*time.Second)
}
