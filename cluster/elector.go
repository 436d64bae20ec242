package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
	// kick wakes contend's blocking query when yield clears, so the lock a
	// preferred member left is taken at once.
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

// newSession registers (or re-registers) the check, passes it, and creates
// a session tied to that check alone: not to serfHealth, whose failure
// could end the session before the leader's clock says so.
func (e *Elector) newSession(ctx context.Context) (string, time.Time, error) {
	o := e.o
	cctx, cancel := context.WithTimeout(ctx, o.CheckTTL)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(cctx)
	// A session of an earlier run of this instance is tied to the same
	// check ID; registering the check passes it again and would keep that
	// session, and the lock it may hold, alive. End those sessions first.
	sessions, _, err := o.Client.Session().List(q)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("list sessions: %w", err)
	}
	for _, s := range sessions {
		if s.Name == e.sessionName() {
			if _, err := o.Client.Session().Destroy(s.ID, (&api.WriteOptions{}).WithContext(cctx)); err != nil {
				return "", time.Time{}, fmt.Errorf("destroy stale session %s: %w", s.ID, err)
			}
			e.log.Info("ha: ended a session of an earlier run", "session", s.ID)
		}
	}
	err = o.Client.Agent().CheckRegisterOpts(&api.AgentCheckRegistration{
		ID: e.checkID, Name: "kelpie ha heartbeat " + o.ID,
		AgentServiceCheck: api.AgentServiceCheck{TTL: o.CheckTTL.String(), Status: api.HealthPassing,
			Notes: "passed by kelpie every check TTL/4; the HA session dies with it"},
	}, q)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("register check %s: %w", e.checkID, err)
	}
	sent := o.Now()
	id, _, err := o.Client.Session().Create(&api.SessionEntry{
		Name:       e.sessionName(),
		NodeChecks: []string{e.checkID},
		TTL:        o.SessionTTL.String(),
		LockDelay:  o.LockDelay,
		Behavior:   api.SessionBehaviorRelease,
	}, (&api.WriteOptions{}).WithContext(cctx))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("create session for %s: %w", o.Key, err)
	}
	return id, sent, nil
}

func (e *Elector) sessionName() string { return "kelpie-ha " + e.o.ID }

// beat passes the check every CheckTTL/4, reporting each confirmation
// with its send time. Renewals run on their own loop (renew): a renewal
// stuck while Consul has no leader must not delay the agent-local passes.
func (e *Elector) beat(ctx context.Context, gen int, out chan<- event) {
	o := e.o
	tick := time.NewTicker(o.CheckTTL / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, o.CheckTTL/2)
		sent := o.Now()
		err := o.Client.Agent().UpdateTTLOpts(e.checkID, "", api.HealthPassing, (&api.QueryOptions{}).WithContext(rctx))
		cancel()
		switch {
		case err == nil:
			send(ctx, out, event{kind: evCheckPassed, gen: gen, sent: sent})
		case ctx.Err() != nil:
		case isCheckUnknown(err):
			// The agent lost the check (restarted): the session went with it.
			send(ctx, out, event{kind: evSessionGone, gen: gen})
			return
		default:
			e.log.Debug("ha: check pass failed", "check", e.checkID, "err", err)
		}
	}
}

// renew renews the session every SessionTTL/4, reporting each confirmation
// with its send time, or that Consul no longer knows the session.
func (e *Elector) renew(ctx context.Context, gen int, session string, out chan<- event) {
	o := e.o
	tick := time.NewTicker(o.SessionTTL / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, o.SessionTTL/4)
		sent := o.Now()
		entry, _, err := o.Client.Session().Renew(session, (&api.WriteOptions{}).WithContext(rctx))
		cancel()
		switch {
		case err == nil && entry == nil:
			send(ctx, out, event{kind: evSessionGone, gen: gen})
			return
		case err == nil:
			send(ctx, out, event{kind: evSessionRenewed, gen: gen, sent: sent})
		case ctx.Err() == nil:
			e.log.Debug("ha: session renewal failed", "err", err)
		}
	}
}

func isCheckUnknown(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code == 404 || (se.Code == 500 && strings.Contains(se.Body, "does not have associated TTL"))
	}
	return strings.Contains(err.Error(), "does not have associated TTL") || strings.Contains(err.Error(), "Unknown check")
}

// contend tries to take the lock and, once held, watches it with
// consistent blocking queries. It reports the holder as it changes.
func (e *Elector) contend(ctx context.Context, gen int, session string, out chan<- event) {
	o := e.o
	kv := o.Client.KV()
	var index uint64
	holder, held, first := "", false, true
	for ctx.Err() == nil {
		wait := o.SessionTTL / 2
		if e.yield.Load() {
			wait = o.CheckTTL // in case a kick is missed: look again soon
		}
		rctx, cancel := context.WithTimeout(ctx, wait+o.CheckTTL)
		var kicked atomic.Bool
		go func() {
			select {
			case <-e.kick:
				kicked.Store(true)
				cancel()
			case <-rctx.Done():
			}
		}()
		pair, meta, err := kv.Get(o.Key, (&api.QueryOptions{RequireConsistent: true, WaitIndex: index, WaitTime: wait}).WithContext(rctx))
		cancel()
		if err != nil && kicked.Load() && ctx.Err() == nil {
			index = 0 // read the key now, without waiting for a change
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				e.log.Debug("ha: lock query failed", "key", o.Key, "err", err)
				pause(ctx, o.CheckTTL/4)
			}
			continue
		}
		if meta.LastIndex < index {
			index = 0 // the index went backwards (a new Consul): start over
		} else {
			index = meta.LastIndex
		}
		if index == 0 {
			index = 1
		}
		cur := ""
		if pair != nil && pair.Session != "" {
			var v lockValue
			if json.Unmarshal(pair.Value, &v) == nil {
				cur = v.ID
			}
		}
		ours := pair != nil && pair.Session == session
		if ours {
			send(ctx, out, event{kind: evAcquired, gen: gen, index: pair.LockIndex})
		} else if held || first {
			send(ctx, out, event{kind: evLost, gen: gen})
		}
		held, first = ours, false
		if cur != holder {
			holder = cur
			send(ctx, out, event{kind: evLeader, gen: gen, leader: cur})
		}
		if pair != nil && pair.Session != "" {
			continue // held (by us or another): wait for a change
		}
		// Free: try to take it; during a lock-delay Consul refuses, so
		// retry briefly until the delay ends or somebody else wins.
		for ctx.Err() == nil {
			if e.yield.Load() {
				break // a preferred member takes it
			}
			actx, cancel := context.WithTimeout(ctx, o.CheckTTL)
			ok, _, err := kv.Acquire(&api.KVPair{Key: o.Key, Value: e.value, Session: session}, (&api.WriteOptions{}).WithContext(actx))
			cancel()
			if err == nil && ok {
				index = 0 // read the LockIndex back at once
				break
			}
			if err != nil && ctx.Err() == nil {
				e.log.Debug("ha: lock acquire failed", "key", o.Key, "err", err)
			}
			cur, _, err := kv.Get(o.Key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
			if err == nil && cur != nil && cur.Session != "" {
				break // somebody won: go back to watching
			}
			pause(ctx, min(o.LockDelay/4, 100*time.Millisecond))
		}
	}
}

// watchCandidates announces this member under the candidates prefix, held
// by its session, and watches the others: it reports evYield when a live
// member with Preempt and a higher priority appears.
func (e *Elector) watchCandidates(ctx context.Context, gen int, session string, out chan<- event) {
	o := e.o
	kv := o.Client.KV()
	key := e.candidates() + o.ID
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, o.CheckTTL)
		ok, _, err := kv.Acquire(&api.KVPair{Key: key, Value: e.value, Session: session}, (&api.WriteOptions{}).WithContext(actx))
		cancel()
		if err == nil && ok {
			break
		}
		pause(ctx, o.CheckTTL/4)
	}
	var index uint64
	for ctx.Err() == nil {
		pairs, meta, err := kv.List(e.candidates(), (&api.QueryOptions{WaitIndex: index, WaitTime: o.SessionTTL / 2}).WithContext(ctx))
		if err != nil {
			pause(ctx, o.CheckTTL/4)
			continue
		}
		index = max(meta.LastIndex, 1)
		yield := false
		for _, p := range pairs {
			var v lockValue
			if p.Session == "" || p.Session == session || json.Unmarshal(p.Value, &v) != nil {
				continue
			}
			if v.Preempt && v.Priority > o.Priority {
				yield = true
			}
		}
		switch was := e.yield.Swap(yield); {
		case yield && !was:
			send(ctx, out, event{kind: evYield, gen: gen})
		case !yield && was:
			select {
			case e.kick <- struct{}{}:
			default:
			}
		}
	}
}

// release gives the lock up, bounded by a few seconds; a failure leaves
// the lock to the session's end.
func (e *Elector) release(session string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, _, err := e.o.Client.KV().Release(&api.KVPair{Key: e.o.Key, Session: session}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		e.log.Warn("ha: release lock", "key", e.o.Key, "err", err)
	}
}

// send delivers ev unless ctx ends first.
func send(ctx context.Context, out chan<- event, ev event) {
	select {
	case out <- ev:
	case <-ctx.Done():
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// destroy ends a session that is no longer used, best effort.
func (e *Elector) destroy(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := e.o.Client.Session().Destroy(id, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		e.log.Debug("ha: destroy session", "session", id, "err", err)
	}
}

// shutdown releases what Run holds in Consul, each step bounded.
func (e *Elector) shutdown(session string, wasLeader bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	w := (&api.WriteOptions{}).WithContext(ctx)
	if session != "" {
		// The candidate key first: a member yielding to this one must see it
		// gone before it sees the lock free.
		if _, err := e.o.Client.KV().Delete(e.candidates()+e.o.ID, w); err != nil {
			e.log.Debug("ha: delete candidate key", "err", err)
		}
		if wasLeader {
			e.release(session)
		}
		if _, err := e.o.Client.Session().Destroy(session, w); err != nil {
			e.log.Warn("ha: destroy session", "err", err)
		}
	}
	if err := e.o.Client.Agent().CheckDeregisterOpts(e.checkID, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		e.log.Debug("ha: deregister check", "check", e.checkID, "err", err)
	}
}
