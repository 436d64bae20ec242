package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/kelpie-lb/kelpie/balancer"
)

// ErrNoService is returned by Watch for a WatchSpec without a service name.
var ErrNoService = errors.New("consul watch: no service name")

// HealthAPI is the one Consul call discovery makes. *api.Health satisfies
// it; tests replace it with a scripted fake.
type HealthAPI interface {
	Service(service, tag string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error)
}

var _ HealthAPI = (*api.Health)(nil)

// Defaults for ConsulOptions' zero values.
const (
	DefaultWaitTime    = time.Minute
	DefaultMinInterval = 100 * time.Millisecond
	DefaultBackoffMin  = 250 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
	DefaultEmptyGrace  = 30 * time.Second
)

// ConsulOptions configures a Consul source. The zero value talks to the
// agent at CONSUL_HTTP_ADDR or 127.0.0.1:8500 with stale reads and the
// defaults below.
type ConsulOptions struct {
	// Address of the Consul HTTP API, "host:port" or "http(s)://host:port".
	// Empty means CONSUL_HTTP_ADDR, else 127.0.0.1:8500 (consul/api's
	// defaults).
	Address string
	// Token is the ACL token, sent as the X-Consul-Token header. It is never
	// logged, never returned by Status and scrubbed from error text. Empty
	// means consul/api's fallback: CONSUL_HTTP_TOKEN(_FILE), else none.
	Token string
	// Datacenter queried by watches that name none. Empty means the agent's.
	Datacenter string
	// RequireConsistent turns off stale reads. By default (false) queries set
	// AllowStale, so any Consul server answers and discovery keeps working
	// through leader elections, at the price of data that may lag the
	// leader by a little (Consul reports how much as LastContact).
	RequireConsistent bool
	// WaitTime is how long one blocking query may wait for a change
	// (Consul's "wait", max 10m; the server adds up to WaitTime/16). It also
	// bounds how old a healthy watch's last sync gets. Zero means 1m.
	WaitTime time.Duration
	// MinInterval is the least time between the starts of two queries of
	// one watch, so a flapping service cannot turn the loop into a busy
	// loop. Zero means 100ms.
	MinInterval time.Duration
	// BackoffMin and BackoffMax bound the retry delay after errors: it
	// doubles from BackoffMin per consecutive failure up to BackoffMax, with
	// jitter (a random value in [d/2, d]). Zero means 250ms and 10s.
	BackoffMin, BackoffMax time.Duration
	// EmptyGrace is how long Consul must keep reporting no passing instance
	// of a service before a watch hands an empty list to its sinks. Until
	// then the last known members keep serving: an empty answer is more
	// often a deregistration storm, an agent restart or a bad check than a
	// real wish to drop all traffic. A watch's first sync applies an empty
	// list at once (there is nothing to keep). Zero means 30s; negative
	// applies empty lists at once.
	EmptyGrace time.Duration
	// Health replaces the client built from Address/Token (tests).
	Health HealthAPI
	// Logger receives sync transitions (first sync, failing, recovered,
	// membership changes). Nil discards.
	Logger *slog.Logger
}

func (o *ConsulOptions) setDefaults() {
	if o.WaitTime <= 0 {
		o.WaitTime = DefaultWaitTime
	}
	if o.MinInterval <= 0 {
		o.MinInterval = DefaultMinInterval
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.EmptyGrace == 0 {
		o.EmptyGrace = DefaultEmptyGrace
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// WatchSpec names one Consul query. Watches with equal specs (after
// defaults) share one blocking query, whatever number of sinks they feed.
type WatchSpec struct {
	// Service is the Consul service name. Required.
	Service string `json:"service"`
	// Tag keeps only instances carrying this tag. Empty keeps all.
	Tag string `json:"tag,omitempty"`
	// Datacenter overrides ConsulOptions.Datacenter for this watch.
	Datacenter string `json:"datacenter,omitempty"`
	// IncludeWarning also routes to instances whose worst check is
	// "warning", with the weight Consul gives warning instances
	// (Weights.Warning, default 1) scaled by WarningWeightPercent. By
	// default only instances whose checks all pass are members.
	IncludeWarning bool `json:"include_warning,omitempty"`
	// WarningWeightPercent scales a warning instance's Weights.Warning
	// (rounded, at least 1). Zero means 100. Ignored without IncludeWarning.
	WarningWeightPercent int `json:"warning_weight_percent,omitempty"`
}

func (s WatchSpec) normalized() WatchSpec {
	if !s.IncludeWarning {
		s.WarningWeightPercent = 0
	} else if s.WarningWeightPercent <= 0 {
		s.WarningWeightPercent = 100
	}
	return s
}

func (s WatchSpec) String() string {
	var b strings.Builder
	b.WriteString(s.Service)
	if s.Tag != "" {
		b.WriteString(" tag=" + s.Tag)
	}
	if s.Datacenter != "" {
		b.WriteString(" dc=" + s.Datacenter)
	}
	if s.IncludeWarning {
		fmt.Fprintf(&b, " warning=%d%%", s.WarningWeightPercent)
	}
	return b.String()
}

// Consul keeps sinks' member lists in step with Consul's health view of
// services. Create it with NewConsul, add watches with Watch, and call Run
// once; Watch and Unwatch may be called before or while Run runs (config
// reloads). All methods are safe for concurrent use.
type Consul struct {
	opts   ConsulOptions
	health HealthAPI
	log    *slog.Logger

	mu      sync.Mutex
	watches map[WatchSpec]*watch
	bySink  map[Sink]*watch
	ctx     context.Context // Run's context; nil until Run starts
	wg      sync.WaitGroup
	ran     bool
	stopped bool // Run is returning
}

// NewConsul builds the Consul API client from o. It does not contact
// Consul: errors from a down agent surface in Status and the logs once Run
// runs.
func NewConsul(o ConsulOptions) (*Consul, error) {
	o.setDefaults()
	h := o.Health
	if h == nil {
		cfg := api.DefaultConfig()
		if o.Address != "" {
			cfg.Address = o.Address
		}
		if o.Token != "" {
			cfg.Token = o.Token
			cfg.TokenFile = ""
		}
		if o.Datacenter != "" {
			cfg.Datacenter = o.Datacenter
		}
		client, err := api.NewClient(cfg)
		if err != nil {
			return nil, fmt.Errorf("consul client: %s", redact(err, o.Token))
		}
		h = client.Health()
	}
	return &Consul{
		opts:    o,
		health:  h,
		log:     o.Logger,
		watches: map[WatchSpec]*watch{},
		bySink:  map[Sink]*watch{},
	}, nil
}

// Watch makes sink follow spec, as balancer.SourceConsul members. A sink
// follows one spec: watching again with another spec moves it, and its
// members stay until the new watch delivers. If the watch has already
// synced, sink gets its members before Watch returns.
func (c *Consul) Watch(spec WatchSpec, sink Sink) error {
	if spec.Service == "" {
		return ErrNoService
	}
	spec = spec.normalized()
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.bySink[sink]; old != nil {
		if old.spec == spec {
			return nil
		}
		c.detach(old, sink)
	}
	w := c.watches[spec]
	if w == nil {
		w = newWatch(spec, &c.opts, c.health, c.log)
		c.watches[spec] = w
		if c.ctx != nil && !c.stopped {
			c.start(w)
		}
	}
	c.bySink[sink] = w
	w.addSink(sink)
	return nil
}

// Unwatch stops feeding sink and clears the members Consul gave it
// (SetMembers(SourceConsul, nil)); its other sources' members stay. A watch
// left without sinks stops. Unwatching a sink that follows nothing does
// nothing.
func (c *Consul) Unwatch(sink Sink) {
	c.mu.Lock()
	w := c.bySink[sink]
	if w != nil {
		c.detach(w, sink)
	}
	c.mu.Unlock()
	if w != nil {
		sink.SetMembers(balancer.SourceConsul, nil)
	}
}

// detach removes sink from w and stops w when that was its last sink.
// Called with c.mu held.
func (c *Consul) detach(w *watch, sink Sink) {
	delete(c.bySink, sink)
	if w.removeSink(sink) == 0 {
		delete(c.watches, w.spec)
		w.stop()
	}
}

// start runs w's loop under Run's context. Called with c.mu held.
func (c *Consul) start(w *watch) {
	ctx, cancel := context.WithCancel(c.ctx)
	w.cancel = cancel
	c.wg.Go(func() { w.run(ctx) })
}

// Run runs every watch, present and future, until ctx ends, then waits for
// their loops to exit and returns nil. Consul errors never end Run: watches
// keep their last members and retry. Run may be called once.
func (c *Consul) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.ran {
		c.mu.Unlock()
		return errors.New("consul: Run called twice")
	}
	c.ran = true
	c.ctx = ctx
	for _, w := range c.watches {
		c.start(w)
	}
	c.mu.Unlock()
	<-ctx.Done()
	c.mu.Lock()
	c.stopped = true // no loop starts once Wait may be running
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// Synced reports whether every watch has completed at least one successful
// query (readiness). With no watches it is true.
func (c *Consul) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.watches {
		if !w.status().Synced {
			return false
		}
	}
	return true
}

// WatchStatus describes one watch for the admin API and metrics. It never
// holds the token.
type WatchStatus struct {
	Spec WatchSpec `json:"spec"`
	// Synced is true once a query has succeeded.
	Synced bool `json:"synced"`
	// LastSync is when the last query succeeded (zero before the first).
	// In steady state it is at most about WaitTime*17/16 old; more means
	// Consul is unreachable or hung and the members are the last known.
	LastSync time.Time `json:"last_sync,omitzero"`
	// LastError is the most recent query error, token scrubbed; empty
	// after a success.
	LastError string `json:"last_error,omitempty"`
	// Failures counts consecutive failed queries.
	Failures int `json:"failures"`
	// Index is the Consul index the next blocking query waits on.
	Index uint64 `json:"index"`
	// Members is how many members the sinks hold from this watch.
	Members int `json:"members"`
	// EmptySince is when Consul started reporting no instance while the
	// sinks still hold members (the EmptyGrace clock); zero otherwise.
	EmptySince time.Time `json:"empty_since,omitzero"`
	// Sinks is how many sinks (upstreams) share the watch.
	Sinks int `json:"sinks"`
}

// Age is how long ago the watch last synced, or -1 before its first sync.
// kelpie_consul_last_sync_age_seconds is this.
func (s WatchStatus) Age(now time.Time) time.Duration {
	if !s.Synced {
		return -1
	}
	return now.Sub(s.LastSync)
}

// Status lists every watch, sorted by service, tag and datacenter.
func (c *Consul) Status() []WatchStatus {
	c.mu.Lock()
	out := make([]WatchStatus, 0, len(c.watches))
	for _, w := range c.watches {
		out = append(out, w.status())
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Spec.String() < out[j].Spec.String() })
	return out
}

// SinkStatus reports the status of the watch sink follows, and false when
// it follows none.
func (c *Consul) SinkStatus(sink Sink) (WatchStatus, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.bySink[sink]
	if w == nil {
		return WatchStatus{}, false
	}
	return w.status(), true
}

// redact returns err's text with the token replaced, since transport errors
// may quote request details.
func redact(err error, token string) string {
	s := err.Error()
	if token != "" {
		s = strings.ReplaceAll(s, token, "[redacted]")
	}
	return s
}
