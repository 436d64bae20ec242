package health

import (
	"errors"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// TestHeartbeatStep: a backend gets one TTL from its first sighting; past
// the TTL without a beat it is missed; it comes back only after Rise beats
// in a row; turning heartbeats off clears the miss.
func TestHeartbeatStep(t *testing.T) {
	p := balancer.NewPool(balancer.Options{Name: "web"})
	p.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "127.0.0.1:9001"}})
	t.Cleanup(p.Close)
	b := p.Snapshot().Members[0]
	c := New(Options{Heartbeat: &HeartbeatOptions{TTL: time.Second}})
	o := c.opts.Load().Heartbeat
	if o.Rise != DefaultRise {
		t.Fatalf("rise default %d", o.Rise)
	}
	now := time.Now()
	c.checkHeartbeats(p, o, now) // first sighting: the TTL starts
	c.checkHeartbeats(p, o, now.Add(900*time.Millisecond))
	if b.State().HeartbeatMissed {
		t.Fatal("missed within the first TTL")
	}
	c.checkHeartbeats(p, o, now.Add(1100*time.Millisecond))
	if !b.State().HeartbeatMissed || b.Down() != balancer.ReasonHeartbeatMissed {
		t.Fatalf("not missed after the TTL: %v", b.Down())
	}
	if err := c.Beat(b); err != nil {
		t.Fatal(err)
	}
	c.checkHeartbeats(p, o, time.Now())
	if !b.State().HeartbeatMissed {
		t.Fatal("back after one beat, want rise 2")
	}
	c.Beat(b)
	c.checkHeartbeats(p, o, time.Now())
	if b.State().HeartbeatMissed {
		t.Fatal("still missed after rise beats")
	}
	c.checkHeartbeats(p, o, time.Now().Add(2*time.Second))
	c.Reconfigure(Options{})
	if err := c.Beat(b); !errors.Is(err, ErrNoHeartbeat) {
		t.Fatalf("Beat with heartbeats off: %v", err)
	}
	c.checkHeartbeats(p, nil, time.Now())
	if b.State().HeartbeatMissed {
		t.Fatal("miss not cleared when heartbeats were turned off")
	}
}
