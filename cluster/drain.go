package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/kelpie-lb/kelpie/balancer"
)

// Fleet drains live in Consul's KV store, one key per drained backend:
//
//	<prefix>/<upstream>/<address>  ->  {"by":"...","reason":"...","at":"..."}
//
// KV rather than Consul's service maintenance mode: it works the same for
// static and Consul-discovered backends, it records who and why, it lives
// in the servers' Raft log (so it survives restarts of every kelpie and of
// any agent), and it needs only key_prefix write ACLs on kelpie's own prefix
// instead of node:write on every backend's node.

// DrainPrefix is the KV prefix of a cluster's fleet drains.
func DrainPrefix(cluster string) string { return "kelpie/" + cluster + "/drain/" }

// FleetDrain is one fleet-wide drain.
type FleetDrain struct {
	Upstream string    `json:"upstream"`
	Address  string    `json:"address"`
	By       string    `json:"by"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// drainRecord is the stored value.
type drainRecord struct {
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// ErrBadDrainKey marks a key under the drain prefix that is not
// <upstream>/<address>; such keys are ignored.
var ErrBadDrainKey = errors.New("not <upstream>/<address>")

func drainKey(prefix, upstream, address string) string {
	return prefix + url.PathEscape(upstream) + "/" + url.PathEscape(address)
}

func parseDrain(prefix string, p *api.KVPair) (FleetDrain, error) {
	rest := strings.TrimPrefix(p.Key, prefix)
	up, addr, ok := strings.Cut(rest, "/")
	if !ok || up == "" || addr == "" || strings.Contains(addr, "/") {
		return FleetDrain{}, fmt.Errorf("drain key %s: %w", p.Key, ErrBadDrainKey)
	}
	var err error
	d := FleetDrain{}
	if d.Upstream, err = url.PathUnescape(up); err != nil {
		return FleetDrain{}, fmt.Errorf("drain key %s: %w", p.Key, err)
	}
	if d.Address, err = url.PathUnescape(addr); err != nil {
		return FleetDrain{}, fmt.Errorf("drain key %s: %w", p.Key, err)
	}
	var rec drainRecord
	if len(p.Value) > 0 && json.Unmarshal(p.Value, &rec) == nil {
		d.By, d.Reason, d.At = rec.By, rec.Reason, rec.At
	}
	return d, nil
}

// DrainerOptions configures a Drainer.
type DrainerOptions struct {
	// Client talks to Consul; required.
	Client *api.Client
	// Prefix is the KV prefix, e.g. DrainPrefix("edge"); required.
	Prefix string
	// Pools returns the current pools (called on every change). Required.
	Pools func() []*balancer.Pool
	// WaitTime bounds one blocking query. Zero means 1m.
	WaitTime time.Duration
	// Logger receives applied drains and Consul errors. Nil discards.
	Logger *slog.Logger
}

// Drainer keeps the local pools in line with the cluster's fleet drains:
// it watches the prefix with blocking queries and drains or readies
// backends as keys come and go. Errors change nothing: while Consul is
// unreachable every drain stays as it was. Safe for concurrent use.
type Drainer struct {
	o   DrainerOptions
	log *slog.Logger

	mu      sync.Mutex
	drains  map[[2]string]FleetDrain // (upstream, address) -> drain, as last read
	synced  bool
	applied map[[2]string]bool // what this Drainer drained in the pools
	changed chan struct{}      // closed and replaced after every apply
}

// NewDrainer checks o.
func NewDrainer(o DrainerOptions) (*Drainer, error) {
	if o.Client == nil || o.Prefix == "" || o.Pools == nil {
		return nil, errors.New("fleet drain: client, prefix and pools are required")
	}
	if !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	if o.WaitTime == 0 {
		o.WaitTime = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Drainer{o: o, log: o.Logger, drains: map[[2]string]FleetDrain{}, applied: map[[2]string]bool{}, changed: make(chan struct{})}, nil
}

// Drain records a fleet drain in Consul and applies it here at once; every
// other instance applies it within one blocking query.
func (d *Drainer) Drain(ctx context.Context, fd FleetDrain) error {
	if fd.At.IsZero() {
		fd.At = time.Now().UTC()
	}
	val, _ := json.Marshal(drainRecord{By: fd.By, Reason: fd.Reason, At: fd.At})
	key := drainKey(d.o.Prefix, fd.Upstream, fd.Address)
	if _, err := d.o.Client.KV().Put(&api.KVPair{Key: key, Value: val}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("fleet drain %s %s: write %s: %w", fd.Upstream, fd.Address, key, err)
	}
	d.mu.Lock()
	d.drains[[2]string{fd.Upstream, fd.Address}] = fd
	d.applyLocked()
	d.mu.Unlock()
	return nil
}

// Ready removes a fleet drain from Consul and readies the backend here.
func (d *Drainer) Ready(ctx context.Context, upstream, address string) error {
	key := drainKey(d.o.Prefix, upstream, address)
	if _, err := d.o.Client.KV().Delete(key, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("fleet ready %s %s: delete %s: %w", upstream, address, key, err)
	}
	d.mu.Lock()
	delete(d.drains, [2]string{upstream, address})
	d.applyLocked()
	d.mu.Unlock()
	return nil
}

// Lookup returns the fleet drain of a backend, if any.
func (d *Drainer) Lookup(upstream, address string) (FleetDrain, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fd, ok := d.drains[[2]string{upstream, address}]
	return fd, ok
}

// List returns the known fleet drains sorted by upstream and address, and
// whether they were read from Consul at least once.
func (d *Drainer) List() ([]FleetDrain, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]FleetDrain, 0, len(d.drains))
	for _, fd := range d.drains {
		out = append(out, fd)
	}
	slices.SortFunc(out, func(a, b FleetDrain) int {
		if c := strings.Compare(a.Upstream, b.Upstream); c != 0 {
			return c
		}
		return strings.Compare(a.Address, b.Address)
	})
	return out, d.synced
}

// Changed returns a channel closed after the next time drains are applied
// to the pools (a sync with Consul, Drain, Ready or Apply).
func (d *Drainer) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

// Apply re-applies the known drains to the current pools; call it after a
// config reload added pools.
func (d *Drainer) Apply() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applyLocked()
}

func (d *Drainer) applyLocked() {
	pools := map[string]*balancer.Pool{}
	for _, p := range d.o.Pools() {
		if p != nil {
			pools[p.Name()] = p
		}
	}
	for k, fd := range d.drains {
		p := pools[k[0]]
		if p == nil {
			continue
		}
		if !d.applied[k] {
			d.log.Info("fleet drain applied", "upstream", k[0], "backend", k[1], "by", fd.By, "reason", fd.Reason)
		}
		// RestoreDrained also covers a backend that is not a member (yet).
		p.RestoreDrained([]string{k[1]})
		d.applied[k] = true
	}
	for k := range d.applied {
		if _, ok := d.drains[k]; ok {
			continue
		}
		delete(d.applied, k)
		if p := pools[k[0]]; p != nil {
			p.Undrain(k[1]) // an unknown backend is fine: it is forgotten
			d.log.Info("fleet drain lifted", "upstream", k[0], "backend", k[1])
		}
	}
	close(d.changed)
	d.changed = make(chan struct{})
}

// Run watches the prefix until ctx ends.
func (d *Drainer) Run(ctx context.Context) error {
	var index uint64
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		// Bounded: Consul answers within WaitTime plus up to WaitTime/16 of
		// jitter; a hung agent must not hold the watch forever.
		qctx, cancel := context.WithTimeout(ctx, d.o.WaitTime+d.o.WaitTime/16+5*time.Second)
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: d.o.WaitTime, AllowStale: true}).WithContext(qctx)
		pairs, meta, err := d.o.Client.KV().List(d.o.Prefix, q)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("fleet drain watch failed; drains unchanged", "prefix", d.o.Prefix, "err", err, "retry", backoff)
				pause(ctx, backoff)
				backoff = min(2*backoff, 10*time.Second)
			}
			continue
		}
		backoff = 250 * time.Millisecond
		if meta.LastIndex < index {
			index = 0
		} else {
			index = max(meta.LastIndex, 1)
		}
		next := map[[2]string]FleetDrain{}
		for _, p := range pairs {
			fd, err := parseDrain(d.o.Prefix, p)
			if err != nil {
				d.log.Warn("fleet drain ignored", "err", err)
				continue
			}
			next[[2]string{fd.Upstream, fd.Address}] = fd
		}
		d.mu.Lock()
		d.drains, d.synced = next, true
		d.applyLocked()
		d.mu.Unlock()
	}
	return ctx.Err()
}
