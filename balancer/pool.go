package balancer

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnknownBackend is returned for an address the pool does not hold.
var ErrUnknownBackend = errors.New("unknown backend")

// Source says where a pool member comes from; a backend may be listed by
// several sources at once.
type Source uint32

// Sources of membership.
const (
	SourceStatic Source = 1 << iota // the config file's backends list
	SourceConsul                    // a Consul service watch
)

func (s Source) String() string {
	var parts []string
	if s&SourceStatic != 0 {
		parts = append(parts, "static")
	}
	if s&SourceConsul != 0 {
		parts = append(parts, "consul")
	}
	return strings.Join(parts, "+")
}

// Member is one backend as a source lists it.
type Member struct {
	Address string // "host:port"
	Weight  int    // relative share; 0 means 1; capped at MaxWeight
	Backup  bool   // serve only when no primary is eligible
}

// Options configures a Pool. The zero value is a round-robin pool without
// slow start, panic mode, guards or logging.
type Options struct {
	// Name is the upstream's name, used in logs.
	Name string
	// Algorithm picks among eligible backends. Zero is RoundRobin.
	Algorithm Algorithm
	// HashBalanceFactor bounds the load of a Hash pool, in percent: no
	// backend takes a new request while its in-flight count is at or above
	// this share of the average (weighted), so a key whose backend is full
	// goes to the next backend in its own order. Values below 100 cannot be
	// met and act as 100. 0 (the default) disables the bound: a key always
	// reaches its first choice while that is eligible.
	HashBalanceFactor int
	// HashFallback picks, in a Hash pool, for requests without a key
	// (Pick with NoKey): RoundRobin (the zero value) or LeastConn.
	HashFallback Algorithm
	// Policy describes in words how requests are spread, beyond the
	// algorithm's name (what a hash pool hashes, its bound, sticky
	// cookies), for the admin API and dashboard. "" shows the algorithm's
	// name alone.
	Policy string
	// SlowStart ramps a backend that becomes eligible (after joining a
	// running pool or recovering) from 10% to its full weight linearly over
	// this long. 0 disables.
	SlowStart time.Duration
	// PanicThreshold, in percent: when fewer than this share of a pool's
	// non-drained primaries are eligible (but at least one is) and no
	// backup is eligible, the pool spreads traffic over every non-drained
	// primary whose breaker is not open and that discovery does not report
	// critical, as Envoy does, instead of crushing the eligible few. An
	// eligible backup keeps the pool out of panic (backups take over before
	// the panic rule); backups still serve only when no primary is
	// eligible. 0 disables: only eligible backends ever get traffic.
	PanicThreshold int
	// EWMADecay is the time constant of the latency average least_latency
	// picks by. 0 means DefaultEWMADecay (10s).
	EWMADecay time.Duration
	// NewGuard, if set, makes the guard (circuit breaker and passive
	// detector) for each backend as it joins the pool. It is called with the
	// pool's writer lock held and must not call back into the pool.
	NewGuard func(*Backend) Guard
	// Failback says how a backend that left rotation for a health reason
	// returns once healthy: FailbackAuto (the zero value) at once,
	// FailbackManual only after an operator readies it (failback.go).
	Failback Failback
	// Incidents, if set, receives time-to-detect, time-to-recover and
	// failover events (incident.go).
	Incidents IncidentObserver
	// Logger receives state transitions. nil discards them.
	Logger *slog.Logger
	// Now is the clock for slow start. nil means time.Now.
	Now func() time.Time
}

// Pool is the set of backends of one upstream. Its membership and
// eligibility are published as an immutable Snapshot; Pick reads it without
// locking. All other methods are writers: they serialize on a mutex and swap
// in a new snapshot before returning, so a change is visible to every pick
// that starts after the call returns.
type Pool struct {
	mu      sync.Mutex
	opts    Options
	log     *slog.Logger
	members map[string]*Backend
	lists   map[Source][]Member
	away    map[string]bool // drained addresses that are not members now: drained when they return
	started bool            // first membership applied: later joins slow-start
	changed chan struct{}
	ramp    *time.Timer
	closed  bool
	snap    atomic.Pointer[Snapshot]
	// Every round robin pick writes the cursor and reads snap: a line of
	// its own, so the other core's picks do not miss on snap (false sharing).
	_        cacheLinePad
	rrCursor atomic.Uint64 // round robin position, shared across snapshots
	_        cacheLinePad
}

// NewPool returns an empty pool.
func NewPool(opts Options) *Pool {
	p := &Pool{
		members: map[string]*Backend{},
		lists:   map[Source][]Member{},
		away:    map[string]bool{},
		changed: make(chan struct{}),
	}
	p.setOptions(opts)
	p.rebuild()
	return p
}

func (p *Pool) setOptions(opts Options) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p.log = opts.Logger
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("upstream", opts.Name)
	p.opts = opts
}

// Name is the upstream's name.
func (p *Pool) Name() string { return p.snap.Load().name }

// Algorithm is the pool's picking algorithm.
func (p *Pool) Algorithm() Algorithm { return p.snap.Load().algo }

// Policy is Options.Policy, or the algorithm's name when that is empty.
func (p *Pool) Policy() string {
	if s := p.snap.Load(); s.policy != "" {
		return s.policy
	}
	return p.Algorithm().String()
}

// Snapshot returns the current snapshot. Never nil.
func (p *Pool) Snapshot() *Snapshot { return p.snap.Load() }

// Pick returns an eligible backend, or nil when there is none left that is
// not in tried. key is the request's client hash (see HashIP); only ip_hash
// uses it. Pick takes no lock and does not allocate.
func (p *Pool) Pick(key uint64, tried []*Backend) *Backend {
	return p.snap.Load().pick(key, tried)
}

// Reconfigure applies new options (after a config reload), keeping members
// and their state. NewGuard applies to backends that join from now on.
func (p *Pool) Reconfigure(opts Options) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setOptions(opts)
	p.rebuild()
}

// Changed returns a channel that is closed at the next membership change
// (a backend joining or leaving). Health uses it to start and stop probes.
func (p *Pool) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// Lookup returns the member with this address, or nil.
func (p *Pool) Lookup(addr string) *Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.members[addr]
}

// SetMembers replaces the full list of members that src provides. Backends
// listed by another source stay; backends no source lists any more leave at
// once (no new requests) while their in-flight requests finish. A backend
// present before and after keeps its state: counters, breaker, connections,
// health, drain. Where two sources list one address, the static list's
// weight and backup flag win.
func (p *Pool) SetMembers(src Source, ms []Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.lists[src] = slices.Clone(ms)
	joined, left := p.merge()
	if joined || left {
		close(p.changed)
		p.changed = make(chan struct{})
	}
	p.started = true
	p.rebuild()
}

// merge recomputes membership from the sources' lists. Called with mu held.
func (p *Pool) merge() (joined, left bool) {
	type entry struct {
		m    Member
		srcs Source
	}
	want := map[string]*entry{}
	for _, src := range []Source{SourceConsul, SourceStatic} { // static last: it wins
		for _, m := range p.lists[src] {
			e := want[m.Address]
			if e == nil {
				e = &entry{}
				want[m.Address] = e
			}
			e.m = m
			e.srcs |= src
		}
	}
	now := p.opts.Now()
	for addr, e := range want {
		b := p.members[addr]
		if b == nil {
			var st State
			if p.away[addr] {
				st.Drained = true
				delete(p.away, addr) // the backend's state holds it from now on
			}
			if p.started && p.opts.SlowStart > 0 {
				st.eligibleSince = now.UnixNano()
			}
			b = newBackend(addr, st)
			if p.opts.NewGuard != nil {
				b.guard = p.opts.NewGuard(b) // before anyone else sees b
			}
			p.members[addr] = b
			joined = true
			p.log.Info("backend joined", "backend", addr, "source", e.srcs.String())
		}
		w := e.m.Weight
		if w <= 0 {
			w = 1
		}
		b.listed.Store(int32(min(w, MaxWeight))) // a source's weight is any int: never wrap to 0 or below
		b.weight.Store(effectiveWeight(b))
		b.backup.Store(e.m.Backup)
		b.sources.Store(uint32(e.srcs))
	}
	for addr, b := range p.members {
		if want[addr] == nil {
			delete(p.members, addr)
			st := *b.state.Load()
			if st.Drained {
				p.away[addr] = true // drained again if it returns
			}
			st.Removed = true
			b.state.Store(&st)
			left = true
			p.log.Info("backend left", "backend", addr, "in_flight", b.InFlight())
		}
	}
	return joined, left
}

// effectiveWeight is b's admin override when set, else its listed weight.
func effectiveWeight(b *Backend) int32 {
	if o := b.override.Load(); o > 0 {
		return o
	}
	return b.listed.Load()
}

// Update changes b's rotation state: change edits a copy of the current
// State, which then replaces it. Update is the only way a State changes
// (besides the pool's own membership changes), so each field has one writer
// at a time: the pool's mutex orders them. It counts the reasons that were
// set and cleared, logs them with detail, and rebuilds the snapshot when b
// is a member and its reasons changed. It reports whether the reasons
// changed. Updating a backend that has left the pool only changes its state.
// change runs with the pool's writer lock held: it must not call the pool.
func (p *Pool) Update(b *Backend, detail string, change func(*State)) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.update(b, detail, change)
}

func (p *Pool) update(b *Backend, detail string, change func(*State)) bool {
	old := *b.state.Load()
	st := old
	change(&st)
	st.Removed, st.eligibleSince, st.drainedAt = old.Removed, old.eligibleSince, old.drainedAt // the pool's own
	p.holdFailback(old, &st)
	if st.Drained && !old.Drained {
		st.drainedAt = p.opts.Now().UnixNano()
	}
	was, now := old.Down(), st.Down()
	if was != 0 && now == 0 && p.opts.SlowStart > 0 {
		st.eligibleSince = p.opts.Now().UnixNano()
	}
	if was != 0 && now == 0 {
		b.lat.forget() // back at the pool's median, not at what got it out
	}
	if st == old {
		return false
	}
	b.state.Store(&st)
	if was == now {
		if st.Degraded != old.Degraded && p.members[b.addr] == b {
			p.rebuild() // same rotation, another weight
		}
		return false
	}
	p.noteTransition(b, was, now)
	set, cleared := now&^was, was&^now
	for i := range numReasons {
		if set&(1<<i) != 0 {
			b.transitions[i][0].Add(1)
		}
		if cleared&(1<<i) != 0 {
			b.transitions[i][1].Add(1)
		}
	}
	switch {
	case was == 0:
		p.log.Warn("backend leaves rotation", "backend", b.addr, "reason", set.String(), "detail", detail)
	case now == 0:
		p.log.Info("backend rejoins rotation", "backend", b.addr, "cleared", cleared.String(), "detail", detail)
	default:
		p.log.Info("backend state", "backend", b.addr, "set", set.String(), "cleared", cleared.String(),
			"down", now.String(), "detail", detail)
	}
	if p.members[b.addr] == b {
		p.rebuild()
	}
	return true
}

// Drain takes the backend at addr out of rotation for new requests; its
// in-flight requests finish. The drain survives membership refreshes and the
// backend leaving and returning. Idempotent.
func (p *Pool) Drain(addr string) (*Backend, error) {
	return p.setDrain(addr, true)
}

// Undrain puts a drained backend back into rotation. Idempotent.
func (p *Pool) Undrain(addr string) (*Backend, error) {
	return p.setDrain(addr, false)
}

func (p *Pool) setDrain(addr string, on bool) (*Backend, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.members[addr]
	if b == nil {
		if !on {
			delete(p.away, addr) // so it does not return drained
		}
		return nil, fmt.Errorf("upstream %s: backend %s: %w", p.opts.Name, addr, ErrUnknownBackend)
	}
	p.update(b, "admin", func(s *State) {
		s.Drained = on
		if !on {
			s.AwaitingReady = false // ready is the operator's go for a manual failback
		}
	})
	return b, nil
}

// Drained returns the addresses drained by an operator, sorted, including
// ones that have currently left the pool.
func (p *Pool) Drained() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.away))
	for a := range p.away {
		out = append(out, a)
	}
	for a, b := range p.members {
		if b.state.Load().Drained {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// RestoreDrained marks addrs drained, as if Drain had been called for each,
// whether or not they are members yet (used to restore state on start).
func (p *Pool) RestoreDrained(addrs []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range addrs {
		if b := p.members[a]; b != nil {
			p.update(b, "restored", func(s *State) { s.Drained = true })
		} else {
			p.away[a] = true
		}
	}
}

// SetWeight overrides the backend's weight until the override is cleared
// with weight 0. It applies at once and survives membership refreshes. Only
// this backend's weight changes: membership is not recomputed.
func (p *Pool) SetWeight(addr string, weight int) (*Backend, error) {
	if weight < 0 || weight > MaxWeight {
		return nil, fmt.Errorf("weight %d: must be between 0 and %d", weight, MaxWeight)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.members[addr]
	if b == nil {
		return nil, fmt.Errorf("upstream %s: backend %s: %w", p.opts.Name, addr, ErrUnknownBackend)
	}
	b.override.Store(int32(weight))
	b.weight.Store(effectiveWeight(b))
	p.log.Info("backend weight set", "backend", addr, "weight", b.Weight())
	p.rebuild()
	return b, nil
}

// MaxWeight is the largest weight a backend may have.
const MaxWeight = 10000

// Close stops the pool's timers. The pool stays readable.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.ramp != nil {
		p.ramp.Stop()
	}
}

// rebuild publishes a new snapshot. Called with mu held.
func (p *Pool) rebuild() {
	s, ramping := buildSnapshot(p, p.opts.Now())
	p.noteTier(p.snap.Load(), s)
	p.snap.Store(s)
	if p.ramp != nil {
		p.ramp.Stop()
		p.ramp = nil
	}
	if ramping && !p.closed {
		step := min(max(p.opts.SlowStart/20, 100*time.Millisecond), time.Second)
		p.ramp = time.AfterFunc(step, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.closed {
				p.rebuild()
			}
		})
	}
}
