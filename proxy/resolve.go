package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultDNSCache is how long a backend name's addresses are reused before
// the next new connection looks them up again.
const DefaultDNSCache = 5 * time.Second

// resolver dials one backend's host:port when the host is a name (a
// container, a Kubernetes Service): backends in containers move to new
// addresses without a reload. It caches the name's addresses for ttl, and
// forgets them as soon as no address accepts a connection, so a container
// restarted with a new IP is reached at the next connect, not after the
// cache expires. A name with several addresses stays one backend (one
// health state, one breaker); its new connections rotate over the
// addresses, each connect moving on to the next address when one fails
// within the connect timeout. If a lookup fails, the last answer is used
// (a DNS outage does not take healthy backends away).
//
// fasthttp's own dialer would cache names for a minute; kelpie dials
// through this instead. Safe for concurrent use.
type resolver struct {
	ttl    time.Duration // <= 0: look up for every new connection
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	now    func() time.Time

	mu      sync.Mutex
	addrs   []netip.Addr
	expires time.Time
	next    atomic.Uint32 // rotation over addrs
}

func newResolver(ttl time.Duration) *resolver {
	return &resolver{
		ttl: ttl,
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
		now: time.Now,
	}
}

// dial returns how up's backends are dialled: Upstream.Dial if set, else
// through a resolver (one per backend transport, so one per name).
func (up *Upstream) dial(set settings) func(string, time.Duration) (net.Conn, error) {
	if up.Dial != nil {
		return up.Dial
	}
	r := newResolver(set.dnsCache)
	if up.lookup != nil {
		r.lookup = up.lookup
	}
	return r.dial
}

// dial connects to addr (host:port) within timeout.
func (r *resolver) dial(addr string, timeout time.Duration) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return net.DialTimeout("tcp", addr, timeout)
	}
	deadline := time.Now().Add(timeout)
	addrs, cached, err := r.resolve(host, deadline, false)
	if err != nil {
		return nil, err
	}
	c, err := dialAny(addrs, port, deadline, r.next.Add(1))
	if err == nil || !cached {
		return c, err
	}
	// Every cached address failed: the name may have moved. Look it up
	// again now and, if it did move, try the new addresses.
	fresh, _, lerr := r.resolve(host, deadline, true)
	if lerr != nil || slices.Equal(fresh, addrs) {
		return nil, err
	}
	return dialAny(fresh, port, deadline, r.next.Add(1))
}

// resolve returns host's addresses, from the cache unless it expired or
// force is set; cached says they came from the cache.
func (r *resolver) resolve(host string, deadline time.Time, force bool) (addrs []netip.Addr, cached bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !force && len(r.addrs) > 0 && r.now().Before(r.expires) {
		return r.addrs, true, nil
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	got, err := r.lookup(ctx, host)
	if err == nil && len(got) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		if len(r.addrs) > 0 && !force {
			return r.addrs, true, nil // stale beats nothing; retried next dial
		}
		return nil, false, fmt.Errorf("resolve %s: %w", host, err)
	}
	for i, a := range got {
		got[i] = a.Unmap()
	}
	r.addrs = got
	r.expires = r.now().Add(r.ttl)
	return got, false, nil
}

// dialAny tries addrs in turn from index start, giving each an equal share
// of the time left, and returns the first connection.
func dialAny(addrs []netip.Addr, port string, deadline time.Time, start uint32) (net.Conn, error) {
	var first error
	for i := range addrs {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		a := addrs[(int(start)+i)%len(addrs)]
		c, err := net.DialTimeout("tcp", net.JoinHostPort(a.String(), port), left/time.Duration(len(addrs)-i))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = fmt.Errorf("dial %v: %w", addrs, context.DeadlineExceeded)
	}
	return nil, first
}
