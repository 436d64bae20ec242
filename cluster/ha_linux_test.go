package cluster

import (
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
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

// leaderOnV0 is an HA leading with 10.77.0.100 on v0 of a fresh network
// namespace (no elector: its steps are driven directly), and an ip(8)
// runner in that namespace.
func leaderOnV0(t *testing.T) (h *HA, ip func(args ...string)) {
	name := netns(t)
	ns := newNSThread(t, name)
	vip := VIP{Addr: netip.MustParseAddr("10.77.0.100"), Interface: "v0"}
	h = &HA{o: HAOptions{VIP: &vip, Do: ns.Do, OnConsulLoss: OnConsulLossFence}, log: slog.New(slog.DiscardHandler)}
	var err error
	ns.Do(func() { err = vip.Add(0) })
	if err != nil {
		t.Fatal(err)
	}
	h.held = true
	h.leader.Store(true)
	if st := h.vipStatus(); !st.Held {
		t.Fatalf("leader with the VIP on v0: %+v", st)
	}
	return h, func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
}

// TestHAVIPInterfaceVanishes is docker network disconnect on a leader: the
// interface carrying the VIP disappears. Held is the interface's truth
// (false), the failed removal counts as released, and when the interface
// comes back carrying the address a member that does not lead takes it off.
func TestHAVIPInterfaceVanishes(t *testing.T) {
	h, ip := leaderOnV0(t)
	ip("link", "del", "v0") // takes its peer v1 along
	if st := h.vipStatus(); st.Held || st.Error != "" {
		t.Fatalf("VIP reported held on a missing interface: %+v", st)
	}
	h.apply(Status{Role: RoleFenced})
	if h.held || h.vipErr != nil {
		t.Fatalf("fenced with the interface gone: held=%v err=%v, want released", h.held, h.vipErr)
	}
	h.reconcile() // the interface is still gone: nothing to do, no error
	if h.vipErr != nil {
		t.Fatalf("reconcile with the interface gone: %v", h.vipErr)
	}

	// The interface comes back carrying the VIP (as if never removed).
	ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ip("addr", "add", "10.77.0.1/24", "dev", "v0")
	ip("addr", "add", "10.77.0.100/32", "dev", "v0")
	ip("link", "set", "v0", "up")
	if st := h.vipStatus(); !st.Held {
		t.Fatalf("VIP back on v0 not reported held: %+v", st)
	}
	h.reconcile()
	if st := h.vipStatus(); st.Held || st.Error != "" {
		t.Fatalf("a fenced member left the VIP on its interface: %+v", st)
	}
}

// TestHALeaderRestoresVIP: a leader whose interface vanished and came back
// without the VIP (a link flap, a container's network reconnected) puts it
// back, or nobody would answer at the VIP while this member still leads.
func TestHALeaderRestoresVIP(t *testing.T) {
	h, ip := leaderOnV0(t)
	ip("link", "del", "v0")
	h.reconcile() // still gone: nothing to do, no error
	if st := h.vipStatus(); st.Held || st.Error != "" {
		t.Fatalf("leader with its interface gone: %+v", st)
	}
	ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ip("addr", "add", "10.77.0.1/24", "dev", "v0")
	ip("link", "set", "v0", "up")
	if st := h.vipStatus(); st.Held {
		t.Fatalf("the recreated interface carries the VIP before reconcile: %+v", st)
	}
	h.reconcile()
	if st := h.vipStatus(); !st.Held || st.Error != "" {
		t.Fatalf("leader did not put the VIP back on its returned interface: %+v", st)
	}
}
