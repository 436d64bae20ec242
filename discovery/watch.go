package discovery

import (
	"cmp"
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/kelpie-lb/kelpie/balancer"
)

// callSlack is how long past WaitTime (plus Consul's WaitTime/16 jitter) a
// blocking query may take before it counts as hung and is cancelled.
const callSlack = 10 * time.Second

// watch is one blocking-query loop over one WatchSpec, fanning its results
// out to every sink that follows the spec. The loop (run) only times and
// cancels queries; step decides everything from a query's result, so tests
// drive it directly.
type watch struct {
	spec   WatchSpec
	opts   *ConsulOptions
	health HealthAPI
	log    *slog.Logger
	cancel context.CancelFunc // set and called under Consul.mu

	mu    sync.Mutex // guards sinks and st; held while publishing, so sinks see updates in order
	sinks map[Sink]struct{}
	st    watchState
}

type watchState struct {
	synced     bool
	index      uint64
	members    []balancer.Member // sorted by address; nil before the first sync
	lastSync   time.Time
	lastErr    string
	failures   int
	emptySince time.Time
}

func newWatch(spec WatchSpec, opts *ConsulOptions, h HealthAPI, log *slog.Logger) *watch {
	return &watch{
		spec:   spec,
		opts:   opts,
		health: h,
		log:    log.With("consul_service", spec.String()),
		sinks:  map[Sink]struct{}{},
	}
}

func (w *watch) addSink(s Sink) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sinks[s] = struct{}{}
	if w.st.synced {
		s.SetMembers(balancer.SourceConsul, slices.Clone(w.st.members))
	}
}

// removeSink detaches s and returns how many sinks are left. Once it
// returns, s gets no more updates from w.
func (w *watch) removeSink(s Sink) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.sinks, s)
	return len(w.sinks)
}

func (w *watch) stop() {
	if w.cancel != nil {
		w.cancel()
	}
}

func (w *watch) status() WatchStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WatchStatus{
		Spec:       w.spec,
		Synced:     w.st.synced,
		LastSync:   w.st.lastSync,
		LastError:  w.st.lastErr,
		Failures:   w.st.failures,
		Index:      w.st.index,
		Members:    len(w.st.members),
		EmptySince: w.st.emptySince,
		Sinks:      len(w.sinks),
	}
}

// run queries until ctx ends. A query cancelled because ctx ended is not an
// error; it just ends the loop.
func (w *watch) run(ctx context.Context) {
	var delay time.Duration
	for {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		start := time.Now()
		es, meta, err := w.fetch(ctx, start)
		if ctx.Err() != nil {
			return
		}
		delay = w.step(start, time.Now(), es, meta, err)
	}
}

// fetch runs one query, bounded by its wait time plus slack so a hung agent
// (stopped process, black-holed connection) cannot stall the watch.
func (w *watch) fetch(ctx context.Context, now time.Time) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	q := w.query(now)
	cctx, cancel := context.WithTimeout(ctx, q.WaitTime+q.WaitTime/16+callSlack)
	defer cancel()
	return w.health.Service(w.spec.Service, "", !w.spec.IncludeWarning, q.WithContext(cctx))
}

// query builds the options of the next query.
func (w *watch) query(now time.Time) *api.QueryOptions {
	w.mu.Lock()
	defer w.mu.Unlock()
	wait := w.opts.WaitTime
	if !w.st.emptySince.IsZero() {
		// Come back when the grace ends even if nothing changes by then.
		left := w.st.emptySince.Add(w.opts.EmptyGrace).Sub(now)
		wait = min(wait, max(left, time.Millisecond))
	}
	q := &api.QueryOptions{
		AllowStale:        !w.opts.RequireConsistent,
		RequireConsistent: w.opts.RequireConsistent,
		Datacenter:        w.spec.Datacenter,
		WaitIndex:         w.st.index,
		WaitTime:          wait,
	}
	if w.spec.Tag != "" {
		// The tag parameter of /health/service is deprecated; filter instead.
		q.Filter = strconv.Quote(w.spec.Tag) + " in Service.Tags"
	}
	return q
}

// step applies one query's result (started at start, returned at now) and
// returns how long to wait before the next query.
func (w *watch) step(start, now time.Time, es []*api.ServiceEntry, meta *api.QueryMeta, err error) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := &w.st
	if err != nil {
		st.failures++
		st.lastErr = redact(err, w.opts.Token)
		// Re-read without blocking next time: the agent may come back
		// restarted, with a lower index, and a blocking query on an index
		// from its previous life would hide that for a whole WaitTime.
		st.index = 0
		if st.failures == 1 {
			w.log.Warn("consul watch failing, keeping last known members",
				"err", st.lastErr, "members", len(st.members))
		} else {
			w.log.Debug("consul watch still failing", "err", st.lastErr, "failures", st.failures)
		}
		return w.backoff(st.failures)
	}
	if st.failures > 0 {
		w.log.Info("consul watch recovered", "failures", st.failures)
	}
	st.failures, st.lastErr = 0, ""

	// Waiting on index 0 returns at once (a busy loop); 1 is always safe.
	idx := uint64(1)
	if meta != nil && meta.LastIndex > 1 {
		idx = meta.LastIndex
	}
	if idx < st.index {
		// Consul restarted or restored a snapshot: start over with a
		// non-blocking query rather than wait for an index that may take
		// ages to come back. This result is still current; apply it.
		w.log.Info("consul index went backwards, resetting", "from", st.index, "to", idx)
		st.index = 0
	} else {
		st.index = idx
	}

	ms := w.members(es)
	first := !st.synced
	st.synced, st.lastSync = true, now
	if first {
		w.log.Info("consul watch synced", "members", len(ms), "index", st.index)
	}
	if len(ms) == 0 && len(st.members) > 0 && w.opts.EmptyGrace > 0 {
		if st.emptySince.IsZero() {
			st.emptySince = now
			w.log.Warn("consul reports no instances, keeping last known members during grace",
				"members", len(st.members), "grace", w.opts.EmptyGrace)
		}
		if now.Sub(st.emptySince) < w.opts.EmptyGrace {
			return w.pace(start, now)
		}
		w.log.Warn("consul reported no instances for the whole grace, removing all members",
			"members", len(st.members))
	} else if !st.emptySince.IsZero() && len(ms) > 0 {
		w.log.Info("consul reports instances again", "members", len(ms))
	}
	st.emptySince = time.Time{}
	if !first && slices.Equal(ms, st.members) {
		return w.pace(start, now)
	}
	if !first {
		w.log.Info("consul members changed", "members", len(ms), "was", len(st.members))
	}
	st.members = ms
	for s := range w.sinks {
		s.SetMembers(balancer.SourceConsul, slices.Clone(ms))
	}
	return w.pace(start, now)
}

// pace keeps at least MinInterval between query starts.
func (w *watch) pace(start, now time.Time) time.Duration {
	return max(start.Add(w.opts.MinInterval).Sub(now), 0)
}

// backoff is the delay after the n-th consecutive failure: BackoffMin
// doubled n-1 times, capped at BackoffMax, then jittered into [d/2, d] so
// many kelpies do not hammer a recovering agent in lockstep.
func (w *watch) backoff(n int) time.Duration {
	d := w.opts.BackoffMin
	for i := 1; i < n && d < w.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, w.opts.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

// members turns Consul's entries into a sorted member list: address from
// Service.Address or, when empty, Node.Address; weight from
// Weights.Passing, or the scaled Weights.Warning for warning instances.
// Entries without a usable address or port are skipped; duplicate
// addresses keep the highest weight.
func (w *watch) members(es []*api.ServiceEntry) []balancer.Member {
	ms := make([]balancer.Member, 0, len(es))
	for _, e := range es {
		if e == nil || e.Service == nil || e.Service.Port <= 0 {
			continue
		}
		weight := e.Service.Weights.Passing
		if w.spec.IncludeWarning {
			switch e.Checks.AggregatedStatus() {
			case api.HealthPassing:
			case api.HealthWarning:
				weight = (e.Service.Weights.Warning*w.spec.WarningWeightPercent + 50) / 100
			default: // critical or maintenance
				continue
			}
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" {
			continue
		}
		ms = append(ms, balancer.Member{
			Address: net.JoinHostPort(host, strconv.Itoa(e.Service.Port)),
			Weight:  max(weight, 1),
		})
	}
	slices.SortFunc(ms, func(a, b balancer.Member) int {
		return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(b.Weight, a.Weight))
	})
	return slices.CompactFunc(ms, func(a, b balancer.Member) bool { return a.Address == b.Address })
}
