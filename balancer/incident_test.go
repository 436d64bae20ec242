package balancer

import (
	"sync"
	"testing"
	"time"
)

// incidents records what a pool reports.
type incidents struct {
	mu        sync.Mutex
	detected  []string
	detectD   []time.Duration
	recovered []time.Duration
	failovers []Tier
}

func (r *incidents) Detected(b *Backend, mech string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.detected = append(r.detected, b.Address()+" "+mech)
	r.detectD = append(r.detectD, d)
}

func (r *incidents) Recovered(b *Backend, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recovered = append(r.recovered, d)
}

func (r *incidents) Failover(to Tier) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failovers = append(r.failovers, to)
}

// near reports whether d is within 500ms of want: failures are stamped with
// the real clock, the pool's clock (started at the real time) is advanced by
// hand.
func near(d, want time.Duration) bool {
	return d > want-500*time.Millisecond && d < want+500*time.Millisecond
}

// TestIncidentTimings: time to detect runs from the first failure seen (a
// failed probe or a gateway error, whichever came first; a success resets
// it) to the backend out of rotation, named by the mechanism; time to
// recover runs from out of rotation to back at full weight, slow start
// included.
func TestIncidentTimings(t *testing.T) {
	c := &clock{now: time.Now()}
	rec := &incidents{}
	p := newTestPool(t, Options{Now: c.Now, SlowStart: 10 * time.Second, Incidents: rec}, equal(3))
	b0, b1, b2 := backend(t, p, addr(0)), backend(t, p, addr(1)), backend(t, p, addr(2))

	if _, _, ok := b0.LastDetection(); ok {
		t.Fatal("a new backend has a last detection")
	}
	b0.NoteProbe(false)
	b0.NoteProbe(false) // the second failure does not restart the clock
	c.Advance(2 * time.Second)
	setHealth(p, b0, false)
	d, mech, ok := b0.LastDetection()
	if !ok || mech != MechanismActive || !near(d, 2*time.Second) {
		t.Fatalf("active: last detection %s %q %v, want ~2s active", d, mech, ok)
	}
	c.Advance(5 * time.Second)
	setHealth(p, b0, true)
	if r, ok := b0.LastRecovery(); !ok || r != 15*time.Second {
		t.Fatalf("recovery %s %v, want 5s out + 10s slow start", r, ok)
	}

	// Traffic: a gateway error starts the clock; an OK result resets it.
	b1.Acquire()
	b1.Release(ResultConnectFailed)
	if b1.inc.trafficFail.Load() == 0 {
		t.Fatal("a gateway error did not start the clock")
	}
	b1.Acquire()
	b1.Release(ResultOK)
	if b1.inc.trafficFail.Load() != 0 {
		t.Fatal("an OK result did not reset the clock")
	}
	c.mu.Lock()
	c.now = time.Now() // the failure below is stamped with the real clock
	c.mu.Unlock()
	b1.Acquire()
	b1.Release(ResultTimeout)
	c.Advance(3 * time.Second)
	mark(p, b1, ReasonEjected, true)
	if d, mech, _ := b1.LastDetection(); mech != MechanismPassive || !near(d, 3*time.Second) {
		t.Fatalf("passive: %s %q, want ~3s passive (the OK reset the clock)", d, mech)
	}
	// A second reason while out is not a second detection.
	mark(p, b1, ReasonBreakerOpen, true)
	// Taken out with no failure seen (discovery's critical is no health
	// reason: nothing is reported; a breaker is, with 0).
	mark(p, b2, ReasonBreakerOpen, true)
	if d, mech, _ := b2.LastDetection(); mech != MechanismBreaker || d != 0 {
		t.Fatalf("breaker: %s %q, want 0 breaker", d, mech)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []string{addr(0) + " active", addr(1) + " passive", addr(2) + " breaker"}
	if len(rec.detected) != 3 || rec.detected[0] != want[0] || rec.detected[1] != want[1] || rec.detected[2] != want[2] {
		t.Fatalf("detections %q, want %q", rec.detected, want)
	}
	if len(rec.recovered) != 1 || rec.recovered[0] != 15*time.Second {
		t.Fatalf("recoveries %v, want [15s]", rec.recovered)
	}
}

// TestFailoverEvents: traffic moving to the backup tier and back is
// reported once each way.
func TestFailoverEvents(t *testing.T) {
	rec := &incidents{}
	p := newTestPool(t, Options{Incidents: rec}, []Member{{Address: addr(0)}, {Address: addr(1), Backup: true}})
	p0 := backend(t, p, addr(0))
	setHealth(p, p0, false)
	mark(p, p0, ReasonEjected, true) // still on the backups: no new event
	mark(p, p0, ReasonEjected, false)
	setHealth(p, p0, true)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.failovers) != 2 || rec.failovers[0] != TierBackup || rec.failovers[1] != TierPrimary {
		t.Fatalf("failovers %v, want [backup primary]", rec.failovers)
	}
}
