package cluster

import (
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsThread runs functions on one thread inside a network namespace: a
// "machine" of its own for the VIP, while Consul stays on the host's
// loopback.
type nsThread struct{ do chan func() }

func newNSThread(t *testing.T, name string) *nsThread {
	t.Helper()
	n := &nsThread{do: make(chan func())}
	ready := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open("/run/netns/" + name)
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
		}
		ready <- err
		if err != nil {
			return
		}
		for fn := range n.do {
			fn()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(n.do) })
	return n
}

func (n *nsThread) Do(f func()) {
	done := make(chan struct{})
	n.do <- func() { defer close(done); f() }
	<-done
}

type haMember struct {
	*member
	ha *HA
	ns *nsThread
}

func TestHAVIPMovesAndIsNeverHeldTwice(t *testing.T) {
	agent := needConsul(t)
	vip := VIP{Addr: netip.MustParseAddr("10.77.0.100"), Interface: "v0"}
	var ms [2]*haMember
	for i, id := range []string{"kelpie-a", "kelpie-b"} {
		ns := newNSThread(t, netns(t))
		m := &haMember{ns: ns}
		m.member = startMemberHA(t, agent, id, "kelpie/test/leader", nil, func(o ElectorOptions) *HA {
			h, err := NewHA(HAOptions{Elector: o, VIP: &vip, Do: ns.Do})
			if err != nil {
				t.Fatal(err)
			}
			m.ha = h
			return h
		})
		ms[i] = m
	}
	a, b := ms[0], ms[1]
	holds := func(m *haMember) bool {
		var held bool
		var err error
		m.ns.Do(func() { held, err = vip.Holds() })
		if err != nil {
			t.Error(err)
		}
		return held
	}
	leader, standby := leaderOf(t, a.member, b.member)
	lm, sm := a, b
	if leader == b.member {
		lm, sm = b, a
	}
	deadline := time.Now().Add(3 * time.Second)
	for !holds(lm) {
		if time.Now().After(deadline) {
			t.Fatalf("leader %s never added the VIP: %+v", lm.id, lm.ha.Status())
		}
		time.Sleep(20 * time.Millisecond) // the interface has no event to wait on here
	}
	if holds(sm) {
		t.Fatal("the standby holds the VIP too")
	}
	if st := lm.ha.Status(); st.VIP == nil || !st.VIP.Held || st.Role != RoleLeader {
		t.Fatalf("leader status %+v", st)
	}

	// Cut the leader off; sample VIP ownership on both every 50ms.
	cut := time.Now()
	leader.cut.Cut()
	var moved time.Duration
	both := 0
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		hl, hs := holds(lm), holds(sm)
		if hl && hs {
			both++
		}
		if hs && !hl && moved == 0 {
			moved = time.Since(cut)
		}
		if moved != 0 && time.Since(cut) > moved+time.Second || time.Since(cut) > 10*time.Second {
			break
		}
	}
	t.Logf("VIP on the standby %v after the cut; samples with two holders: %d", moved, both)
	if both != 0 {
		t.Errorf("%d samples saw the VIP on both", both)
	}
	if moved == 0 || moved > 3*time.Second {
		t.Errorf("VIP moved after %v, want within 3s", moved)
	}
	if st := lm.ha.Status(); st.Role != RoleFenced || st.VIP.Held || lm.ha.Ready() {
		t.Errorf("cut-off leader: %+v ready=%v", st, lm.ha.Ready())
	}
	_ = standby
}

// TestHAKeepOnConsulLoss: with on_consul_loss keep, a leader that loses
// Consul (the agent paused) is fenced but keeps the VIP, only going unready;
// with fence (the default) it drops the VIP.
func TestHAKeepOnConsulLoss(t *testing.T) {
	for _, mode := range []string{OnConsulLossKeep, OnConsulLossFence} {
		t.Run(mode, func(t *testing.T) {
			agent := needConsul(t)
			vip := VIP{Addr: netip.MustParseAddr("10.77.0.100"), Interface: "v0"}
			ns := newNSThread(t, netns(t))
			var h *HA
			m := startMemberHA(t, agent, "kelpie-a", "kelpie/test/leader", nil, func(o ElectorOptions) *HA {
				var err error
				if h, err = NewHA(HAOptions{Elector: o, VIP: &vip, Do: ns.Do, OnConsulLoss: mode}); err != nil {
					t.Fatal(err)
				}
				return h
			})
			m.waitRole(t, RoleLeader, 10*time.Second)
			paused := time.Now()
			agent.Pause()
			defer agent.Resume()
			fenced := m.waitRole(t, RoleFenced, 10*time.Second)
			var held bool
			ns.Do(func() { held, _ = vip.Holds() })
			t.Logf("%s: consul paused at 0, fenced after %v, VIP held: %v, ready: %v", mode, fenced.Sub(paused), held, h.Ready())
			if h.Ready() {
				t.Error("a fenced leader reports ready")
			}
			if want := mode == OnConsulLossKeep; held != want {
				t.Errorf("VIP held %v, want %v", held, want)
			}
		})
	}
}
