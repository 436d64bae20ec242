package discovery

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/discovery/consultest"
)

// These tests run a real consul agent -dev (see consultest).

// propagation bounds how long a Consul change may take to reach the pool.
// Measured: about 100ms; the slack is for a loaded CI machine.
const propagation = 2 * time.Second

// agentConsul runs a Consul source against a and feeds a fresh pool per
// spec.
func agentConsul(t *testing.T, a *consultest.Agent, specs ...WatchSpec) (*Consul, []*balancer.Pool) {
	t.Helper()
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	c, err := NewConsul(ConsulOptions{
		Address:    a.HTTPAddr,
		WaitTime:   5 * time.Second,
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: 300 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatal(err)
	}
	var pools []*balancer.Pool
	for _, s := range specs {
		p := balancer.NewPool(balancer.Options{Name: s.Service})
		t.Cleanup(p.Close)
		if err := c.Watch(s, p); err != nil {
			t.Fatal(err)
		}
		pools = append(pools, p)
	}
	runConsul(t, c)
	return c, pools
}

// members lists a pool's current addresses and weights.
func members(p *balancer.Pool) []balancer.Member {
	var ms []balancer.Member
	for _, b := range p.Snapshot().Members {
		ms = append(ms, balancer.Member{Address: b.Address(), Weight: b.Weight()})
	}
	return ms
}

// waitMembers waits, on the pool's change events, until p holds exactly
// want, and returns how long that took.
func waitMembers(t *testing.T, p *balancer.Pool, within time.Duration, want ...balancer.Member) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := time.After(within)
	for {
		ch := p.Changed()
		if got := members(p); slices.Equal(got, want) {
			return time.Since(start)
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Millisecond):
			// Weight changes republish without closing Changed: recheck.
		case <-timeout:
			t.Fatalf("pool %s after %v: %v, want %v", p.Name(), within, members(p), want)
		}
	}
}

func m(addr string, w int) balancer.Member { return balancer.Member{Address: addr, Weight: w} }

func TestAgentMembershipFollowsConsul(t *testing.T) {
	a := consultest.Start(t)
	a.Register("web-1", "web", "127.0.0.11", 9001, []string{"v1"}, nil, api.HealthPassing)
	c, pools := agentConsul(t, a,
		WatchSpec{Service: "web"},
		WatchSpec{Service: "web", Tag: "v2"},
		WatchSpec{Service: "web", IncludeWarning: true},
	)
	all, v2, warn := pools[0], pools[1], pools[2]

	d := waitMembers(t, all, propagation, m("127.0.0.11:9001", 1))
	t.Logf("first sync in %v", d)
	waitMembers(t, warn, propagation, m("127.0.0.11:9001", 1))
	waitSynced(t, c) // v2 synced to an empty list: no pool event for that

	// New passing instance without its own address: the node's is used.
	a.Register("web-2", "web", "", 9002, []string{"v2"}, &api.AgentWeights{Passing: 3, Warning: 1}, api.HealthPassing)
	d = waitMembers(t, all, propagation, m("127.0.0.11:9001", 1), m("127.0.0.1:9002", 3))
	t.Logf("registered instance joined in %v", d)
	waitMembers(t, v2, propagation, m("127.0.0.1:9002", 3))

	// Check turns warning: out of the passing-only pool, kept at its
	// warning weight where warnings are included.
	a.SetStatus("web-2", api.HealthWarning)
	d = waitMembers(t, all, propagation, m("127.0.0.11:9001", 1))
	t.Logf("warning instance left in %v", d)
	waitMembers(t, warn, propagation, m("127.0.0.11:9001", 1), m("127.0.0.1:9002", 1))

	// Critical: gone everywhere.
	a.SetStatus("web-2", api.HealthCritical)
	waitMembers(t, warn, propagation, m("127.0.0.11:9001", 1))
	a.SetStatus("web-2", api.HealthPassing)
	waitMembers(t, all, propagation, m("127.0.0.11:9001", 1), m("127.0.0.1:9002", 3))

	// Deregistered: gone.
	a.Deregister("web-1")
	d = waitMembers(t, all, propagation, m("127.0.0.1:9002", 3))
	t.Logf("deregistered instance left in %v", d)

	// The shared query: three specs, three watches; a fourth sink on an
	// existing spec adds none.
	extra := balancer.NewPool(balancer.Options{Name: "extra"})
	defer extra.Close()
	c.Watch(WatchSpec{Service: "web"}, extra)
	if len(c.Status()) != 3 || len(members(extra)) != 1 {
		t.Fatalf("status %d watches, extra pool %v", len(c.Status()), members(extra))
	}
}

func TestAgentOutageKeepsMembers(t *testing.T) {
	a := consultest.Start(t)
	a.Register("web-1", "web", "127.0.0.11", 9001, nil, nil, api.HealthPassing)
	a.Register("web-2", "web", "127.0.0.12", 9001, nil, nil, api.HealthPassing)
	c, pools := agentConsul(t, a, WatchSpec{Service: "web"})
	p := pools[0]
	want := []balancer.Member{m("127.0.0.11:9001", 1), m("127.0.0.12:9001", 1)}
	waitMembers(t, p, propagation, want...)
	before := p.Snapshot().Members

	// Hung, then dead: the pool must not change at all.
	a.Pause()
	expectNoChange(t, p, 2*time.Second)
	a.Kill()
	expectNoChange(t, p, 2*time.Second)
	st := c.Status()[0]
	if st.Failures == 0 || st.LastError == "" || st.Age(time.Now()) < 2*time.Second {
		t.Fatalf("status during outage = %+v", st)
	}
	t.Logf("during outage: failures=%d age=%v err=%q", st.Failures, st.Age(time.Now()).Round(time.Millisecond), st.LastError)
	if got := p.Snapshot().Members; !slices.Equal(got, before) {
		t.Fatal("backends were replaced during the outage")
	}

	// Back with other registrations (a dev agent forgets everything; its
	// index goes backwards): picked up.
	start := time.Now()
	a.Restart()
	t.Logf("agent restarted in %v", time.Since(start))
	a.Register("web-2", "web", "127.0.0.12", 9001, nil, nil, api.HealthPassing)
	a.Register("web-3", "web", "127.0.0.13", 9001, nil, nil, api.HealthPassing)
	d := waitMembers(t, p, 2*time.Second, m("127.0.0.12:9001", 1), m("127.0.0.13:9001", 1))
	t.Logf("new registrations picked up %v after registering", d)
	if p.Lookup("127.0.0.12:9001") != before[1] {
		t.Fatal("surviving backend was not reused")
	}
	if st := c.Status()[0]; st.Failures != 0 || st.LastError != "" {
		t.Fatalf("status after recovery = %+v", st)
	}
}

// expectNoChange fails if p's membership changes within d. The wait is the
// outage under test, not a guess at how long something takes.
func expectNoChange(t *testing.T, p *balancer.Pool, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	select {
	case <-p.Changed():
		t.Fatalf("pool changed during outage: %v", members(p))
	case <-ctx.Done():
	}
}

// waitSynced polls c.Synced (there is no event for it) for up to
// propagation.
func waitSynced(t *testing.T, c *Consul) {
	t.Helper()
	deadline := time.Now().Add(propagation)
	for !c.Synced() {
		if time.Now().After(deadline) {
			t.Fatalf("not Synced after %v: %+v", propagation, c.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
