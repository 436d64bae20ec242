package proxy

import (
	"context"
	"errors"
	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sharedPortListeners listens on the same free port on each of the given
// loopback addresses (a name's several addresses) and counts accepts.
func sharedPortListeners(t *testing.T, ips ...string) (port string, accepts []*atomic.Int32, lns []net.Listener) {
	t.Helper()
	for try := 0; try < 20; try++ {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port = strconv.Itoa(first.Addr().(*net.TCPAddr).Port)
		lns = []net.Listener{first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(ips) {
			break
		}
		for _, ln := range lns {
			ln.Close()
		}
		lns = nil
	}
	if lns == nil {
		t.Fatal("no port free on every address")
	}
	for _, ln := range lns {
		n := &atomic.Int32{}
		accepts = append(accepts, n)
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				n.Add(1)
				c.Close()
			}
		}()
	}
	return port, accepts, lns
}

// scriptedDNS answers lookups from a settable list and counts them.
type scriptedDNS struct {
	mu      sync.Mutex
	addrs   []string
	err     error
	lookups int
}

func (s *scriptedDNS) set(err error, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs, s.err = addrs, err
}

func (s *scriptedDNS) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups
}

func (s *scriptedDNS) resolver(ttl time.Duration, now func() time.Time) *resolver {
	r := newResolver(ttl)
	r.now = now
	r.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.lookups++
		if host != "backend.test" {
			return nil, errors.New("no such host")
		}
		if s.err != nil {
			return nil, s.err
		}
		var out []netip.Addr
		for _, a := range s.addrs {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}
	return r
}

func dialOK(t *testing.T, r *resolver, addr string) string {
	t.Helper()
	c, err := r.dial(addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	return host
}

func TestResolverCachesForTTL(t *testing.T) {
	port, _, _ := sharedPortListeners(t, "127.0.0.2")
	dns := &scriptedDNS{}
	dns.set(nil, "127.0.0.2")
	clock := &fakeClock{}
	r := dns.resolver(5*time.Second, clock.Now)
	for i := 0; i < 3; i++ {
		dialOK(t, r, "backend.test:"+port)
	}
	if n := dns.count(); n != 1 {
		t.Fatalf("%d lookups for 3 dials within the TTL, want 1", n)
	}
	clock.Advance(5 * time.Second)
	dialOK(t, r, "backend.test:"+port)
	if n := dns.count(); n != 2 {
		t.Fatalf("%d lookups after the TTL expired, want 2", n)
	}
	// No cache: every new connection looks the name up.
	r = dns.resolver(-1, clock.Now)
	dialOK(t, r, "backend.test:"+port)
	dialOK(t, r, "backend.test:"+port)
	if n := dns.count(); n != 4 {
		t.Fatalf("%d lookups with caching off, want 4", n)
	}
	// IP literals are never looked up.
	dialOK(t, r, "127.0.0.2:"+port)
	if n := dns.count(); n != 4 {
		t.Fatalf("an IP literal was looked up")
	}
}

// TestResolverFollowsAMovedName: the name moves (a container restarted with
// a new IP) while its old address is cached; the very next connect reaches
// the new address, long before the TTL ends.
func TestResolverFollowsAMovedName(t *testing.T) {
	port, _, lns := sharedPortListeners(t, "127.0.0.2", "127.0.0.3")
	dns := &scriptedDNS{}
	dns.set(nil, "127.0.0.2")
	clock := &fakeClock{}
	r := dns.resolver(time.Hour, clock.Now)
	if got := dialOK(t, r, "backend.test:"+port); got != "127.0.0.2" {
		t.Fatalf("connected to %s", got)
	}
	lns[0].Close() // the old container is gone...
	dns.set(nil, "127.0.0.3")
	if got := dialOK(t, r, "backend.test:"+port); got != "127.0.0.3" { // ...and the name moved
		t.Fatalf("after the move connected to %s, want 127.0.0.3", got)
	}
	if got := dialOK(t, r, "backend.test:"+port); got != "127.0.0.3" {
		t.Fatalf("the new address was not cached: %s", got)
	}
}

func TestResolverSeveralAddresses(t *testing.T) {
	port, accepts, lns := sharedPortListeners(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	dns := &scriptedDNS{}
	dns.set(nil, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	clock := &fakeClock{}
	r := dns.resolver(time.Hour, clock.Now)
	for i := 0; i < 9; i++ {
		dialOK(t, r, "backend.test:"+port)
	}
	waitAccepts := func(want ...int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var got []int32
			same := true
			for i, a := range accepts {
				got = append(got, a.Load())
				same = same && got[i] == want[i]
			}
			if same {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("accepts per address %v, want %v (new connections rotate over the addresses)", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAccepts(3, 3, 3)
	// One address refuses: every connect still succeeds, on the others.
	lns[1].Close()
	for i := 0; i < 6; i++ {
		if got := dialOK(t, r, "backend.test:"+port); got == "127.0.0.3" {
			t.Fatal("connected to the closed address")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for accepts[0].Load()+accepts[2].Load() != 12 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if a, b, c := accepts[0].Load(), accepts[1].Load(), accepts[2].Load(); a+c != 12 || b != 3 || a == 3 || c == 3 {
		t.Fatalf("accepts per address %d %d %d after closing the second: want the 6 new connections on the first and third", a, b, c)
	}
}

func TestResolverLookupFailure(t *testing.T) {
	port, _, _ := sharedPortListeners(t, "127.0.0.2")
	dns := &scriptedDNS{}
	dns.set(nil, "127.0.0.2")
	clock := &fakeClock{}
	r := dns.resolver(time.Second, clock.Now)
	dialOK(t, r, "backend.test:"+port)
	clock.Advance(time.Minute)
	dns.set(errors.New("server misbehaving"))
	if got := dialOK(t, r, "backend.test:"+port); got != "127.0.0.2" {
		t.Fatalf("with DNS down, connected to %s; want the last answer", got)
	}
	_, err := dns.resolver(time.Second, clock.Now).dial("backend.test:"+port, time.Second)
	if err == nil || !strings.Contains(err.Error(), "resolve backend.test") {
		t.Fatalf("a name never resolved: err %v, want a resolve error naming it", err)
	}
}

// TestProxyFollowsAMovedBackendName runs requests through a Proxy to a
// backend named by DNS whose name moves to another address while kelpie
// holds a keep-alive connection to the old one: every request succeeds,
// the first after the move included, without a reload.
func TestProxyFollowsAMovedBackendName(t *testing.T) {
	port, _, lns := sharedPortListeners(t, "127.0.0.2", "127.0.0.3")
	lns[0].Close()
	lns[1].Close()
	serve := func(ip, name string) *fasthttp.Server {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
		if err != nil {
			t.Fatal(err)
		}
		srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.WriteString(name) }}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Shutdown() })
		return srv
	}
	old := serve("127.0.0.2", "old")
	serve("127.0.0.3", "new")
	dns := &scriptedDNS{}
	dns.set(nil, "127.0.0.2")
	pool := newPool(t, balancer.RoundRobin, "backend.test:"+port)
	up := &Upstream{Pool: pool, Retries: 1, DNSCache: time.Hour}
	up.lookup = dns.resolver(time.Hour, time.Now).lookup
	p := proxyTo(t, up, Options{})
	get := func() string {
		status, body, err := fasthttp.Get(nil, "http://"+p.addr+"/")
		if err != nil {
			return err.Error()
		}
		return strconv.Itoa(status) + " " + string(body)
	}
	for i := 0; i < 3; i++ {
		if got := get(); got != "200 old" {
			t.Fatalf("before the move: %q", got)
		}
	}
	old.Shutdown() // closes the pooled keep-alive connection too
	dns.set(nil, "127.0.0.3")
	for i := 0; i < 5; i++ {
		if got := get(); got != "200 new" {
			t.Fatalf("request %d after the move: %q, want 200 new", i, got)
		}
	}
}
