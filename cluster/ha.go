package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// What a fenced leader does with its virtual IP and its readiness.
const (
	// OnConsulLossFence drops the VIP and goes unready: never two holders
	// of the VIP, at the price of no active instance while nobody can
	// reach Consul (a quorum loss stops the whole pair).
	OnConsulLossFence = "fence"
	// OnConsulLossKeep keeps the VIP and keeps serving, only going unready:
	// a Consul outage stops nothing, but a leader cut off from Consul alone
	// keeps the VIP while a standby takes it, two holders at once.
	OnConsulLossKeep = "keep"
)

// DefaultPriority is ha.priority's default.
const DefaultPriority = 100

// DefaultGARPs is how many gratuitous ARPs a new leader sends, 100ms apart
// (keepalived's vrrp_garp_master_repeat is 5).
const DefaultGARPs = 5

// HAOptions configures an HA group member.
type HAOptions struct {
	// Elector is the election; its OnChange is called after the HA's own
	// effects (VIP) are applied.
	Elector ElectorOptions
	// VIP, if set, is held by the leader.
	VIP *VIP
	// OnConsulLoss is OnConsulLossFence (default) or OnConsulLossKeep.
	OnConsulLoss string
	// GARPs sent on becoming leader. Zero means DefaultGARPs.
	GARPs int
	// Do runs each VIP operation. Nil calls it directly; tests run them on
	// a thread inside a network namespace.
	Do func(func())
}

// HAStatus is GET /api/v1/ha.
type HAStatus struct {
	Role         Role       `json:"role"`
	Leader       string     `json:"leader"`
	FencingToken uint64     `json:"fencing_token"`
	Since        time.Time  `json:"since"`
	VIP          *VIPStatus `json:"vip"`
	// ID is this instance's ID.
	ID string `json:"id"`
}

// VIPStatus says where the VIP is and whether this instance holds it.
type VIPStatus struct {
	Address   string `json:"address"`
	Interface string `json:"interface"`
	Held      bool   `json:"held"`
	// Error is the last VIP operation's error, if it failed.
	Error string `json:"error,omitempty"`
}

// HA is one member of an active-passive group: the election plus what the
// roles mean locally (the VIP, readiness). Safe for concurrent use.
type HA struct {
	o   HAOptions
	el  *Elector
	log *slog.Logger

	mu     sync.Mutex
	held   bool
	vipErr error
	garpMu sync.Mutex     // one announcement burst at a time
	garps  sync.WaitGroup // announcement bursts; Run waits for them
	leader atomic.Bool
	ready  atomic.Bool
}

// NewHA builds the member. With a VIP it removes the address if this
// machine still carries it (from a crashed run): a new instance starts as a
// standby. That also proves kelpie may change the interface: without
// CAP_NET_ADMIN NewHA fails with ErrNeedNetAdmin.
func NewHA(o HAOptions) (*HA, error) {
	switch o.OnConsulLoss {
	case "":
		o.OnConsulLoss = OnConsulLossFence
	case OnConsulLossFence, OnConsulLossKeep:
	default:
		return nil, fmt.Errorf("ha: on_consul_loss %q: want fence or keep", o.OnConsulLoss)
	}
	if o.GARPs == 0 {
		o.GARPs = DefaultGARPs
	}
	if o.Do == nil {
		o.Do = func(f func()) { f() }
	}
	h := &HA{o: o, log: o.Elector.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if o.VIP != nil {
		var err error
		o.Do(func() {
			if err = CheckVIP(o.VIP.Addr, o.VIP.Interface); err == nil {
				err = o.VIP.Remove()
			}
		})
		if err != nil {
			return nil, fmt.Errorf("ha: taking the VIP off the interface at start (a new instance is a standby): %w", err)
		}
	}
	outer := o.Elector.OnChange
	o.Elector.OnChange = func(st Status) {
		h.apply(st)
		if outer != nil {
			outer(st)
		}
	}
	el, err := NewElector(o.Elector)
	if err != nil {
		return nil, err
	}
	h.el = el
	h.ready.Store(true)
	return h, nil
}

// ReconcileInterval is how often a standby or fenced member makes sure the
// VIP is not on its interface (an interface that came back, or an address
// left behind by a removal that failed while the interface was gone).
const ReconcileInterval = time.Second

// Run runs the election until ctx ends; on the way out the VIP is removed
// before the lock is released.
func (h *HA) Run(ctx context.Context) error {
	rctx, stop := context.WithCancel(context.Background()) // outlives ctx until the elector has let go
	var loop sync.WaitGroup
	if h.o.VIP != nil {
		loop.Go(func() {
			every(rctx, ReconcileInterval, func() bool { h.reconcile(); return true })
		})
	}
	err := h.el.Run(ctx)
	stop()
	loop.Wait()
	h.garps.Wait() // each burst ends by itself once leadership is gone
	return err
}

// reconcile makes the interface agree with the role: a leader's VIP is put
// back when it went missing (its interface went away and came back, or
// somebody removed the address), and the VIP is taken off the interface of a
// member that must not hold it: not leading, and not a fenced leader keeping
// it (h.held).
func (h *HA) reconcile() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.leader.Load() {
		h.restore()
		return
	}
	if h.held {
		return
	}
	var on bool
	var err error
	h.o.Do(func() {
		if on, err = h.o.VIP.Holds(); err == nil && on {
			err = h.o.VIP.Remove()
		}
	})
	switch {
	case err != nil && !errors.Is(err, ErrNoInterface):
		h.vipErr = err
		h.log.Error("vip change failed", "vip", h.o.VIP.String(), "err", err)
	case on:
		h.vipErr = nil
		h.log.Warn("vip removed from a member that does not lead", "vip", h.o.VIP.String())
	}
}

// restore puts the VIP back on a leader's interface that does not carry it,
// and announces it again. An interface that is still gone is left for the
// next round. Called with h.mu held.
func (h *HA) restore() {
	var on bool
	var err error
	h.o.Do(func() {
		if on, err = h.o.VIP.Holds(); err == nil && !on {
			err = h.o.VIP.Add(0)
		}
	})
	switch {
	case on || errors.Is(err, ErrNoInterface):
		return
	case err != nil:
		h.vipErr = err
		h.log.Error("vip change failed", "vip", h.o.VIP.String(), "err", err)
		return
	}
	h.vipErr, h.held = nil, true
	h.log.Warn("vip restored on the leader's interface", "vip", h.o.VIP.String())
	if h.o.GARPs > 0 && h.el != nil {
		h.garps.Add(1)
		go h.announce(h.el.Status().FencingToken)
	}
}

// Ready is false while fenced: a fenced instance must not be picked by
// anything that checks readiness.
func (h *HA) Ready() bool { return h.ready.Load() }

// Leader reports whether this instance leads now.
func (h *HA) Leader() bool { return h.leader.Load() }

// FencingToken is the current leadership's token, 0 unless leading.
func (h *HA) FencingToken() uint64 {
	if st := h.el.Status(); st.Role == RoleLeader {
		return st.FencingToken
	}
	return 0
}

// Status returns the current status.
func (h *HA) Status() HAStatus {
	st := h.el.Status()
	out := HAStatus{Role: st.Role, Leader: st.Leader, FencingToken: st.FencingToken, Since: st.Since, ID: h.o.Elector.ID}
	out.VIP = h.vipStatus()
	return out
}

// vipStatus is the VIP part of Status, nil without a VIP. Held is the
// interface's truth, not what kelpie last did: an interface that vanished
// holds nothing.
func (h *HA) vipStatus() *VIPStatus {
	v := h.o.VIP
	if v == nil {
		return nil
	}
	var held bool
	h.o.Do(func() { held, _ = v.Holds() })
	h.mu.Lock()
	defer h.mu.Unlock()
	out := &VIPStatus{Address: v.Addr.String(), Interface: v.Interface, Held: held}
	if h.vipErr != nil {
		out.Error = h.vipErr.Error()
	}
	return out
}

// apply makes the local effects of a role: called by the Elector, in order.
func (h *HA) apply(st Status) {
	leading := st.Role == RoleLeader
	h.leader.Store(leading)
	h.ready.Store(st.Role != RoleFenced)
	v := h.o.VIP
	if v == nil {
		return
	}
	keep := st.Role == RoleFenced && h.o.OnConsulLoss == OnConsulLossKeep
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case leading && !h.held:
		h.o.Do(func() { h.vipErr = v.Add(0) })
		if h.vipErr == nil {
			h.held = true
			h.log.Info("vip added", "vip", v.String(), "fencing_token", st.FencingToken)
			h.garps.Add(1)
			go h.announce(st.FencingToken)
		}
	case !leading && h.held && !keep:
		h.o.Do(func() { h.vipErr = v.Remove() })
		if errors.Is(h.vipErr, ErrNoInterface) {
			h.vipErr = nil // no interface holds nothing: released; reconcile cleans up if it returns
		}
		if h.vipErr == nil {
			h.held = false
		}
		h.log.Warn("vip removed", "vip", v.String(), "role", st.Role, "err", h.vipErr)
	}
	if h.vipErr != nil {
		h.log.Error("vip change failed", "vip", v.String(), "role", st.Role, "err", h.vipErr)
	}
}

// announce sends the gratuitous ARPs of one leadership, stopping as soon as
// the leadership ends.
func (h *HA) announce(token uint64) {
	defer h.garps.Done()
	h.garpMu.Lock()
	defer h.garpMu.Unlock()
	for i := range h.o.GARPs {
		if i > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		if !h.leader.Load() || h.el.Status().FencingToken != token {
			return
		}
		var err error
		h.o.Do(func() { err = h.o.VIP.Add(1) })
		if err != nil {
			h.log.Warn("gratuitous arp failed", "vip", h.o.VIP.String(), "err", err)
			return
		}
	}
}
