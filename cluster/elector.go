package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
)

// Defaults for ElectorOptions' zero values.
const (
	// DefaultSessionTTL is Consul's smallest session TTL.
	DefaultSessionTTL = 10 * time.Second
	// DefaultLockDelay is much shorter than Consul's 15s: the check TTL,
	// not the lock-delay, is what gives a dead leader time to notice.
	DefaultLockDelay = time.Second
	// DefaultCheckTTL makes a killed leader's session invalid after at
	// most 1.5s.
	DefaultCheckTTL = 1500 * time.Millisecond
)

// ErrNoKey is returned by NewElector for options without a lock key.
var ErrNoKey = errors.New("ha: no lock key")

// ElectorOptions configures an Elector.
type ElectorOptions struct {
	// Client talks to the Consul agent; required. The session's check is
	// registered on that agent, so it should be the agent of the machine
	// kelpie runs on: a leader that can still reach its own agent rides out
	// Consul server elections (see Lease).
	Client *api.Client
	// Key is the lock's KV key, e.g. "kelpie/edge/leader"; required.
	Key string
	// ID names this instance (unique in the group); it is the lock's value
	// and part of the check's ID. Required.
	ID string
	// SessionTTL is the session's TTL, 10s..24h. Zero means 10s.
	SessionTTL time.Duration
	// LockDelay is how long Consul keeps an invalidated session's lock from
	// being taken, 1ms..60s. Zero means 1s.
	LockDelay time.Duration
	// CheckTTL is the TTL of the session's check, passed every CheckTTL/4.
	// A leader whose process dies loses the lock CheckTTL after its last
	// pass. Zero means 1.5s.
	CheckTTL time.Duration
	// Margin is how long before the lease could end the leader fences
	// itself. Zero means CheckTTL/4.
	Margin time.Duration
	// Priority and Preempt: an instance with Preempt set takes the lock
	// from a leader of lower Priority (the leader steps down, and no
	// instance of lower priority takes the lock while it is alive), as
	// keepalived's preemption does. Without Preempt (the default) a
	// recovered instance stays standby: failback is manual.
	Priority int
	Preempt  bool
	// OnChange is called with the new status on every change of role or
	// leader, in order, from Run's goroutine; it must return quickly (it is
	// where a virtual IP is added or removed). Nil ignores changes.
	OnChange func(Status)
	// Logger receives role transitions and Consul errors. Nil discards.
	Logger *slog.Logger
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Status is an instance's view of its group.
type Status struct {
	// Role is this instance's role.
	Role Role `json:"role"`
	// Leader is the ID of the instance holding the lock, "" when none is
	// known.
	Leader string `json:"leader"`
	// FencingToken is the lock's LockIndex of the current or last
	// leadership of this instance: it grows with every acquisition of the
	// lock, so a backend can refuse a request carrying a smaller one.
	FencingToken uint64 `json:"fencing_token"`
	// Since is when Role began.
	Since time.Time `json:"since"`
}

// Elector runs one instance's part in a leader election on a Consul lock.
// Status is safe for concurrent use; Run is called once.
type Elector struct {
	o       ElectorOptions
	log     *slog.Logger
	checkID string
	value   []byte
	status  atomic.Pointer[Status]
	// yield is set while a live member would preempt this one; contend
	// does not take the lock then.
	yield atomic.Bool
	// kick wakes contend's blocking query for an immediate read: when yield
	// clears (the lock a preferred member left is taken at once) and when a
	// fenced leader's session is renewed again (it resumes at once).
	kick chan struct{}
}

// NewElector checks opts and applies defaults.
func NewElector(o ElectorOptions) (*Elector, error) {
	if o.Client == nil {
		return nil, errors.New("ha: no consul client")
	}
	if o.Key == "" {
		return nil, ErrNoKey
	}
	if o.ID == "" {
		return nil, errors.New("ha: no instance id")
	}
	if o.SessionTTL == 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.LockDelay == 0 {
		o.LockDelay = DefaultLockDelay
	}
	if o.CheckTTL == 0 {
		o.CheckTTL = DefaultCheckTTL
	}
	if o.Margin == 0 {
		o.Margin = o.CheckTTL / 4
	}
	if o.SessionTTL < 10*time.Second {
		return nil, fmt.Errorf("ha: session_ttl %s: Consul's minimum is 10s", o.SessionTTL)
	}
	if o.Margin >= o.CheckTTL/2 {
		return nil, fmt.Errorf("ha: fencing margin %s must be under half the check TTL %s", o.Margin, o.CheckTTL)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	value, _ := json.Marshal(lockValue{ID: o.ID, Priority: o.Priority, Preempt: o.Preempt})
	e := &Elector{o: o, log: o.Logger, checkID: "kelpie-ha:" + o.ID, value: value, kick: make(chan struct{}, 1)}
	e.status.Store(&Status{Role: RoleStandby, Since: o.Now()})
	return e, nil
}

// lockValue is what the leader writes into the lock key.
type lockValue struct {
	ID       string `json:"id"`
	Priority int    `json:"priority"`
	Preempt  bool   `json:"preempt,omitempty"`
}

// candidates is the KV prefix where every member announces itself, held by
// its session, so that leaders can see a preempting member.
func (e *Elector) candidates() string { return e.o.Key + "-candidates/" }

// Status returns the current status.
func (e *Elector) Status() Status { return *e.status.Load() }

// CheckID is the ID of the TTL check the session is tied to.
func (e *Elector) CheckID() string { return e.checkID }

// event is what the helper goroutines tell Run's loop.
type event struct {
	kind   eventKind
	gen    int       // the session generation it is about
	sent   time.Time // when the confirmed request was sent
	index  uint64    // LockIndex for acquired/held
	leader string    // for leaderSeen
	err    error
}

type eventKind int

const (
	evCheckPassed eventKind = iota
	evSessionRenewed
	evSessionGone // Consul says the session no longer exists
	evAcquired    // the lock is ours (fresh acquire, or seen held by us)
	evLost        // the lock is not ours
	evLeader      // the lock's holder as seen by a blocking query
	evYield       // a live member with preempt and a higher priority exists
)

// Run takes part in the election until ctx ends, then steps down: it drops
// leadership (OnChange with RoleStandby), releases the lock, destroys the
// session and deregisters the check, each bounded by a few seconds. It
// returns ctx's error.
func (e *Elector) Run(ctx context.Context) error {
	o := e.o
	lease := &Lease{CheckTTL: o.CheckTTL, SessionTTL: o.SessionTTL, Margin: o.Margin}
	events := make(chan event, 16)
	var (
		gen     int
		session string
		stop    context.CancelFunc = func() {}
		wg      sync.WaitGroup
		leader  string
		retry   = time.NewTimer(0) // next session attempt
		fence   = time.NewTimer(time.Hour)
	)
	fence.Stop()
	defer retry.Stop()
	defer fence.Stop()

	publish := func() {
		st := &Status{Role: lease.Role(), Leader: leader, FencingToken: lease.Token(), Since: lease.Since()}
		if st.Since.IsZero() {
			st.Since = e.status.Load().Since
		}
		if old := e.status.Load(); *old == *st {
			return
		}
		e.status.Store(st)
		if o.OnChange != nil {
			o.OnChange(*st)
		}
	}
	dropSession := func(reason string) {
		stop()
		wg.Wait()
		if session != "" {
			id := session
			session = ""
			go e.destroy(id)
		}
		if lease.Lost(o.Now()) {
			e.log.Warn("ha role change", "to", RoleStandby, "reason", reason)
		}
		if leader == o.ID {
			leader = ""
		}
		publish()
	}

	for {
		select {
		case <-ctx.Done():
			wasLeader := lease.Role() != RoleStandby
			stop()
			wg.Wait()
			lease.Lost(o.Now())
			if leader == o.ID {
				leader = ""
			}
			publish()
			e.shutdown(session, wasLeader)
			return ctx.Err()

		case <-retry.C:
			id, sent, err := e.newSession(ctx)
			if err != nil {
				if ctx.Err() == nil {
					e.log.Warn("ha: no consul session; retrying", "err", err)
				}
				retry.Reset(o.CheckTTL)
				continue
			}
			lease.CheckPassed(sent)
			lease.SessionRenewed(sent)
			gen++
			session = id
			var sctx context.Context
			sctx, stop = context.WithCancel(ctx)
			e.yield.Store(false)
			wg.Add(4)
			go func(gen int) { defer wg.Done(); e.watchCandidates(sctx, gen, id, events) }(gen)
			go func(gen int) { defer wg.Done(); e.beat(sctx, gen, events) }(gen)
			go func(gen int) { defer wg.Done(); e.renew(sctx, gen, id, events) }(gen)
			go func(gen int) { defer wg.Done(); e.contend(sctx, gen, id, events) }(gen)

		case ev := <-events:
			if ev.gen != gen || session == "" {
				continue // about a session already dropped
			}
			switch ev.kind {
			case evCheckPassed:
				lease.CheckPassed(ev.sent)
			case evSessionRenewed:
				lease.SessionRenewed(ev.sent)
				if lease.Role() == RoleFenced {
					// Consul answers again: look at the lock now rather than
					// at the end of contend's blocking query.
					select {
					case e.kick <- struct{}{}:
					default:
					}
				}
			case evSessionGone:
				dropSession("consul invalidated the session")
				retry.Reset(0)
			case evAcquired:
				if e.yield.Load() && lease.Role() != RoleLeader {
					continue // read before the step-down's release; the preferred member takes it
				}
				was := lease.Role()
				if !lease.Acquired(o.Now(), ev.index) {
					// Too late to lead on this session's confirmations: start over.
					e.log.Warn("ha: lock answer came after the lease deadline; releasing", "fencing_token", ev.index)
					dropSession("stale lock answer")
					retry.Reset(0)
					continue
				}
				leader = o.ID
				if was != RoleLeader {
					e.log.Info("ha role change", "to", RoleLeader, "from", was, "fencing_token", ev.index)
				}
				fence.Reset(lease.Deadline().Sub(o.Now()))
				publish()
			case evLost:
				if lease.Lost(o.Now()) {
					e.log.Warn("ha role change", "to", RoleStandby, "reason", "lock lost")
				}
				fence.Stop()
				if leader == o.ID {
					leader = ""
				}
				publish()
			case evLeader:
				leader = ev.leader
				publish()
			case evYield:
				if lease.Role() == RoleLeader {
					e.log.Info("ha role change: a preferred member is back; stepping down", "to", RoleStandby)
					lease.Lost(o.Now())
					fence.Stop()
					leader = ""
					publish() // the VIP goes before the lock does
					e.release(session)
				}
			}
			if lease.Role() == RoleLeader {
				fence.Reset(lease.Deadline().Sub(o.Now()))
			}

		case <-fence.C:
			if lease.Tick(o.Now()) {
				e.log.Error("ha role change: no confirmation from consul in time, fencing", "to", RoleFenced,
					"deadline", lease.Deadline(), "fencing_token", lease.Token())
				leader = "" // unknown until Consul answers again
				publish()
			} else if lease.Role() == RoleLeader {
				fence.Reset(lease.Deadline().Sub(o.Now()))
			}
		}
	}
}
