package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/crypto/acme/autocert"
)

// ACME certificates shared by a pair (or fleet) of kelpies: autocert's
// cache in Consul KV, one key per blob under a prefix. Sharing the cache is
// what makes one certificate serve both kelpies; on its own it would not
// stop both from ordering one when both start without it. So a miss of a
// certificate or of the account key takes a Consul lock for that name
// (<prefix>/.lock/<name>) and reads again under it: the kelpie that finds
// the blob still missing keeps the lock while autocert orders and releases
// it with the Put; the other waits, then reads what was put. Challenge
// tokens (tls-alpn-01 certificates) are shared too, so the CA's check may
// reach either kelpie, whichever ordered.
//
// Renewals take no lock: autocert's renewal reads the cache first and keeps
// a fresher certificate it finds there, and each kelpie renews at a random
// point of a window of up to an hour, so the second one finds the first's.

// DefaultACMEHold is ACMECacheOptions.Hold's default.
const DefaultACMEHold = 2 * time.Minute

// ACMECacheOptions configures an ACMECache.
type ACMECacheOptions struct {
	// Client talks to the Consul agent. Required.
	Client *api.Client
	// Prefix is the KV folder, without slashes at either end, e.g.
	// "kelpie/acme". Required.
	Prefix string
	// Hold bounds how long one kelpie keeps a name's lock for an order
	// that never ends in a Put (the CA refused, the process hung), and how
	// long another waits for it before ordering itself. Default
	// DefaultACMEHold.
	Hold time.Duration
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// ACMECache is an autocert.Cache in Consul KV. Safe for concurrent use.
type ACMECache struct {
	kv     *api.KV
	client *api.Client
	prefix string
	hold   time.Duration
	log    *slog.Logger

	mu   sync.Mutex
	held map[string]*heldLock // names this process is ordering
}

// heldLock is a name's lock kept for an order, let go by Put, Release or
// the Hold timer, whichever comes first.
type heldLock struct {
	lock  *api.Lock
	timer *time.Timer
}

var _ autocert.Cache = (*ACMECache)(nil)

// NewACMECache returns a cache under o.Prefix. It does not contact Consul.
func NewACMECache(o ACMECacheOptions) (*ACMECache, error) {
	prefix := strings.Trim(o.Prefix, "/")
	if o.Client == nil || prefix == "" {
		return nil, fmt.Errorf("acme cache: a Consul client and a KV prefix are required")
	}
	if o.Hold <= 0 {
		o.Hold = DefaultACMEHold
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &ACMECache{kv: o.Client.KV(), client: o.Client, prefix: prefix, hold: o.Hold,
		log: o.Logger.With("component", "acme-cache"), held: map[string]*heldLock{}}, nil
}

func (c *ACMECache) key(name string) string { return c.prefix + "/" + name }

// ordered reports the names whose miss leads to an order (certificates,
// "domain" and "domain+rsa") or a new account ("acme_account+key"); not
// the challenge tokens, which the CA's check asks for and must not wait,
// nor the account key's legacy name, which autocert only reads.
func ordered(name string) bool {
	return !strings.HasSuffix(name, "+token") && name != "acme_account.key"
}

func (c *ACMECache) read(ctx context.Context, name string) ([]byte, error) {
	p, _, err := c.kv.Get(c.key(name), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("acme cache: get %s: %w", c.key(name), err)
	}
	if p == nil {
		return nil, nil
	}
	return p.Value, nil
}

// Get returns the named blob, or autocert.ErrCacheMiss. A miss of an
// ordered name waits (up to Hold) for another kelpie's order of it.
func (c *ACMECache) Get(ctx context.Context, name string) ([]byte, error) {
	data, err := c.read(ctx, name)
	if err != nil || data != nil {
		return data, err
	}
	if !ordered(name) || c.holds(name) {
		return nil, autocert.ErrCacheMiss
	}
	l, err := c.lock(ctx, name)
	if err != nil || l == nil {
		// Consul unreachable or the other kelpie's order outlasted Hold:
		// order anyway; two certificates beat none.
		c.log.Warn("acme cache: ordering without the pair's lock", "name", name, "err", err)
		return nil, autocert.ErrCacheMiss
	}
	if data, err := c.read(ctx, name); err != nil || data != nil {
		_ = l.Unlock()
		return data, err
	}
	c.keep(name, l)
	return nil, autocert.ErrCacheMiss
}

// lock takes name's lock, waiting up to Hold or ctx; nil, nil when it is
// still held by another at the end.
func (c *ACMECache) lock(ctx context.Context, name string) (*api.Lock, error) {
	l, err := c.client.LockOpts(&api.LockOptions{
		Key: c.key(".lock/" + name), SessionName: "kelpie acme order " + name,
		LockTryOnce: true, LockWaitTime: c.hold,
	})
	if err != nil {
		return nil, err
	}
	stop, done := make(chan struct{}), make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			close(stop)
		case <-done:
		}
	}()
	lost, err := l.Lock(stop)
	if err != nil || lost == nil {
		return nil, err
	}
	return l, nil
}

func (c *ACMECache) holds(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[name] != nil
}

func (c *ACMECache) keep(name string, l *api.Lock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held[name] = &heldLock{lock: l, timer: time.AfterFunc(c.hold, func() { c.Release(name) })}
}

// Release lets go of name's lock if this process holds it for an order:
// called by Put, by the Hold timer, and by whoever saw the order fail.
func (c *ACMECache) Release(name string) {
	c.mu.Lock()
	h := c.held[name]
	delete(c.held, name)
	c.mu.Unlock()
	if h == nil {
		return
	}
	h.timer.Stop()
	if err := h.lock.Unlock(); err != nil {
		c.log.Warn("acme cache: releasing the order lock", "name", name, "err", err)
	}
}

// Put stores the blob, then lets go of the name's order lock.
func (c *ACMECache) Put(ctx context.Context, name string, data []byte) error {
	defer c.Release(name)
	_, err := c.kv.Put(&api.KVPair{Key: c.key(name), Value: data}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("acme cache: put %s: %w", c.key(name), err)
	}
	return nil
}

// Delete removes the blob; a missing one is no error.
func (c *ACMECache) Delete(ctx context.Context, name string) error {
	if _, err := c.kv.Delete(c.key(name), (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("acme cache: delete %s: %w", c.key(name), err)
	}
	return nil
}
