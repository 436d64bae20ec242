package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/discovery/consultest"
)

// fleetMember is one kelpie's pool with its Drainer.
type fleetMember struct {
	pool   *balancer.Pool
	d      *Drainer
	cancel context.CancelFunc
	done   chan struct{}
}

func startFleetMember(t *testing.T, agent *consultest.Agent, addr string) *fleetMember {
	t.Helper()
	p := balancer.NewPool(balancer.Options{Name: "web"})
	p.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "127.0.0.1:9001", Weight: 1}, {Address: "127.0.0.1:9002", Weight: 1}})
	t.Cleanup(p.Close)
	d, err := NewDrainer(DrainerOptions{Client: clientAt(t, addr), Prefix: DrainPrefix("edge"), Pools: func() []*balancer.Pool { return []*balancer.Pool{p} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &fleetMember{pool: p, d: d, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(m.done); d.Run(ctx) }()
	t.Cleanup(m.stop)
	return m
}

func (m *fleetMember) stop() { m.cancel(); <-m.done }

func (m *fleetMember) drained(addr string) bool {
	return m.pool.Lookup(addr).Admin() != balancer.AdminReady
}

// waitDrained waits until addr's drain state is want and returns when.
func (m *fleetMember) waitDrained(t *testing.T, addr string, want bool, d time.Duration) time.Time {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		ch := m.d.Changed()
		if m.drained(addr) == want {
			return time.Now()
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s drained=%v not reached after %v", addr, want, d)
		}
	}
}

func TestFleetDrainReachesEveryInstanceAndSurvivesRestarts(t *testing.T) {
	agent := needConsul(t)
	relay := newCutter(t, agent.HTTPAddr) // the watchers reach Consul through it
	fleet := []*fleetMember{
		startFleetMember(t, agent, relay.Addr()),
		startFleetMember(t, agent, relay.Addr()),
		startFleetMember(t, agent, relay.Addr()),
	}
	// Let every watch reach its blocking wait first.
	for _, m := range fleet {
		waitSynced(t, m.d)
	}
	start := time.Now()
	if err := fleet[0].d.Drain(context.Background(), FleetDrain{Upstream: "web", Address: "127.0.0.1:9001", By: "ops@test", Reason: "kernel upgrade"}); err != nil {
		t.Fatal(err)
	}
	for i, m := range fleet {
		took := m.waitDrained(t, "127.0.0.1:9001", true, 5*time.Second).Sub(start)
		t.Logf("instance %d drained after %v", i, took)
		if took > time.Second {
			t.Errorf("instance %d took %v, want under 1s", i, took)
		}
		if m.drained("127.0.0.1:9002") {
			t.Errorf("instance %d drained the other backend too", i)
		}
		fd, ok := m.d.Lookup("web", "127.0.0.1:9001")
		if !ok || fd.By != "ops@test" || fd.Reason != "kernel upgrade" {
			t.Errorf("instance %d knows the drain as %+v %v", i, fd, ok)
		}
	}

	// Each instance restarts (a fresh pool, all backends ready) and picks
	// the drain up on its first sync.
	for i := range fleet {
		fleet[i].stop()
		fleet[i] = startFleetMember(t, agent, relay.Addr())
		fleet[i].waitDrained(t, "127.0.0.1:9001", true, 5*time.Second)
	}

	// A Consul outage changes nothing: first a hung agent (queries hang),
	// then an unreachable one (queries fail and are retried).
	agent.Pause()
	time.Sleep(time.Second) // an outage has to last; nothing to wait on
	relay.Cut()
	time.Sleep(1500 * time.Millisecond) // several failed retries
	for i, m := range fleet {
		if !m.drained("127.0.0.1:9001") || m.drained("127.0.0.1:9002") {
			t.Errorf("instance %d changed its drains during the outage", i)
		}
	}
	agent.Resume()
	relay.Heal()

	// ready -fleet lifts it everywhere.
	start = time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := fleet[1].d.Ready(ctx, "web", "127.0.0.1:9001")
		cancel()
		if err == nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("ready after the outage: %v", err)
		}
	}
	for i, m := range fleet {
		took := m.waitDrained(t, "127.0.0.1:9001", false, 5*time.Second).Sub(start)
		t.Logf("instance %d ready after %v", i, took)
	}
}

func waitSynced(t *testing.T, d *Drainer) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		ch := d.Changed()
		if _, ok := d.List(); ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatal("drainer never synced")
		}
	}
}
