package proxy

import (
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// stickyFixture is a sticky upstream over n loopback backends that answer
// their own index, behind a proxy, with a fake clock shared by the pool
// (drain timestamps) and the sticky grace.
type stickyFixture struct {
	t      *testing.T
	pool   *balancer.Pool
	up     *Upstream
	names  map[string]string // backend address -> its answer
	c      *fasthttp.HostClient
	clk    *fakeClock
	backs  []*backend
	sticky *Sticky
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newStickyFixture(t *testing.T, n int, algo balancer.Algorithm, s *Sticky) *stickyFixture {
	f := &stickyFixture{t: t, names: map[string]string{}, clk: &fakeClock{now: time.Unix(1_700_000_000, 0)}, sticky: s}
	var ms []balancer.Member
	for i := range n {
		name := string(rune('a' + i))
		b := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString(name) })
		f.backs = append(f.backs, b)
		f.names[b.addr] = name
		ms = append(ms, balancer.Member{Address: b.addr})
	}
	f.pool = balancer.NewPool(balancer.Options{Name: "web", Algorithm: algo, Now: f.clk.Now})
	f.pool.SetMembers(balancer.SourceStatic, ms)
	t.Cleanup(f.pool.Close)
	if s != nil {
		s.now = f.clk.Now
	}
	f.up = &Upstream{Pool: f.pool, Sticky: s, Retries: 1, HashOn: HashOn{Source: HashHeader, Name: "X-User"}}
	px := proxyTo(t, f.up, Options{})
	f.c = clientFor(px.addr)
	return f
}

// get sends a request with the given sticky cookie value ("" = none) and
// returns which backend answered and the cookie value set (or "").
func (f *stickyFixture) get(cookie string, hdr ...string) (who, set string) {
	f.t.Helper()
	if f.sticky == nil {
		f.sticky = &Sticky{} // a cookie name to look for, none will be set
	}
	if cookie != "" {
		hdr = append(hdr, "Cookie", "other=1; "+f.sticky.cookieName()+"="+cookie)
	}
	resp := do(f.t, f.c, "GET", "example.com", "/", hdr...)
	if resp.StatusCode() != 200 {
		f.t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
	}
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(f.sticky.cookieName())
	if resp.Header.Cookie(c) {
		set = string(c.Value())
	}
	return string(resp.Body()), set
}

// addrOf is the address of the backend that answers name.
func (f *stickyFixture) addrOf(name string) string {
	for a, n := range f.names {
		if n == name {
			return a
		}
	}
	f.t.Fatalf("no backend %q", name)
	return ""
}

func TestStickyStaysAndLeavesFailedBackend(t *testing.T) {
	f := newStickyFixture(t, 3, balancer.RoundRobin, &Sticky{HTTPOnly: true, SameSite: "lax", TTL: time.Hour})
	who, cookie := f.get("")
	if cookie == "" {
		t.Fatal("first response set no sticky cookie")
	}
	for _, a := range []string{f.addrOf(who), "127.0.0.1"} {
		if dec, _ := base64.RawURLEncoding.DecodeString(cookie); strings.Contains(cookie, a) || strings.Contains(string(dec), a) {
			t.Fatalf("cookie %q reveals the address %s", cookie, a)
		}
	}
	for range 20 { // round robin would spread these over all three
		got, set := f.get(cookie)
		if got != who || set != "" {
			t.Fatalf("pinned to %s: answered by %s, set cookie %q", who, got, set)
		}
	}

	// Health marks it down: the next request leaves at once, with a new cookie.
	b := f.pool.Lookup(f.addrOf(who))
	f.pool.Update(b, "test", func(s *balancer.State) { s.Health = balancer.HealthUnhealthy })
	moved, newCookie := f.get(cookie)
	if moved == who || newCookie == "" || newCookie == cookie {
		t.Fatalf("pinned backend unhealthy: answered by %s (was %s), new cookie %q", moved, who, newCookie)
	}
	for range 10 {
		if got, set := f.get(newCookie); got != moved || set != "" {
			t.Fatalf("re-pinned to %s: answered by %s, set %q", moved, got, set)
		}
	}
	// Its recovery does not pull the moved client back.
	f.pool.Update(b, "test", func(s *balancer.State) { s.Health = balancer.HealthHealthy })
	if got, _ := f.get(newCookie); got != moved {
		t.Fatalf("after the old backend recovered, the re-pinned client went to %s, want %s", got, moved)
	}

	// The pinned backend dies without health noticing: the failed attempt is
	// retried elsewhere and the client re-pinned there.
	for _, be := range f.backs {
		if be.addr == f.addrOf(moved) {
			be.Kill()
		}
	}
	got, set := f.get(newCookie)
	if got == moved || set == "" || set == newCookie {
		t.Fatalf("pinned backend dead: answered by %s, cookie %q", got, set)
	}
	if again, s := f.get(set); again != got || s != "" {
		t.Fatalf("after failover pinned to %s: answered by %s, set %q", got, again, s)
	}
}

func TestStickyDrainGrace(t *testing.T) {
	const grace = 5 * time.Second
	f := newStickyFixture(t, 3, balancer.RoundRobin, &Sticky{DrainGrace: grace})
	who, cookie := f.get("")
	if _, err := f.pool.Drain(f.addrOf(who)); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(grace - time.Millisecond)
	for range 5 {
		if got, set := f.get(cookie); got != who || set != "" {
			t.Fatalf("within the drain grace: answered by %s (pinned %s), set %q", got, who, set)
		}
	}
	for range 9 { // new clients never reach the draining backend
		if got, _ := f.get(""); got == who {
			t.Fatalf("a new client reached the draining backend %s", who)
		}
	}
	f.clk.Advance(time.Millisecond)
	got, set := f.get(cookie)
	if got == who || set == "" || set == cookie {
		t.Fatalf("after the drain grace: answered by %s (drained %s), cookie %q", got, who, set)
	}
	// Back in rotation, the backend does not take back the moved client.
	if _, err := f.pool.Undrain(f.addrOf(who)); err != nil {
		t.Fatal(err)
	}
	if again, _ := f.get(set); again != got {
		t.Fatalf("after undrain the moved client went to %s, want %s", again, got)
	}
}

func TestStickyZeroGraceMovesAtOnce(t *testing.T) {
	f := newStickyFixture(t, 2, balancer.RoundRobin, &Sticky{})
	who, cookie := f.get("")
	if _, err := f.pool.Drain(f.addrOf(who)); err != nil {
		t.Fatal(err)
	}
	if got, set := f.get(cookie); got == who || set == "" {
		t.Fatalf("drain grace 0: answered by the drained %s, cookie %q", got, set)
	}
}

// TestStickyForgedCookie: no cookie value a client can make up reaches a
// backend kelpie would not pick: not the address (plain or encoded), not a
// value made with another key, not a value for a backend that left. The
// drained backend is the target: only a genuine cookie within the grace
// reaches it.
func TestStickyForgedCookie(t *testing.T) {
	f := newStickyFixture(t, 3, balancer.RoundRobin, &Sticky{DrainGrace: time.Hour})
	target := f.addrOf("a")
	if _, err := f.pool.Drain(target); err != nil {
		t.Fatal(err)
	}
	forged := []string{
		target,
		base64.RawURLEncoding.EncodeToString([]byte(target)),
		base64.StdEncoding.EncodeToString([]byte(target)),
		stickyValue([]byte("guessed key"), "web", target),
		stickyValue(nil, "web", target),
		stickyValue(f.up.Sticky.Secret, "web", target), // empty Secret: not the proxy's key
		"AAAAAAAAAAAAAAAAAAAAAA",
		strings.Repeat("x", 1000),
	}
	for _, v := range forged {
		for range 3 {
			got, set := f.get(v)
			if got == "a" {
				t.Fatalf("forged cookie %.40q reached the drained backend", v)
			}
			if set == "" {
				t.Fatalf("forged cookie %.40q: no new cookie set", v)
			}
		}
	}
	// A genuine cookie for it does, within the grace.
	p := f.up.Sticky.table.Load()
	if p == nil {
		t.Fatal("no sticky table built")
	}
	i := -1
	for j, b := range p.snap.Members {
		if b.Address() == target {
			i = j
		}
	}
	if got, _ := f.get(p.values[i]); got != "a" {
		t.Fatalf("genuine cookie for the draining backend went to %s", got)
	}
	// Once it leaves the pool, its cookie is worthless.
	var rest []balancer.Member
	for a := range f.names {
		if a != target {
			rest = append(rest, balancer.Member{Address: a})
		}
	}
	f.pool.SetMembers(balancer.SourceStatic, rest)
	if got, set := f.get(p.values[i]); got == "a" || set == "" {
		t.Fatalf("cookie of a removed backend: answered by %s, set %q", got, set)
	}
}

// TestStickySecretSharedAcrossProxies: with a configured Secret two
// proxies (two kelpie instances, or a restart) accept each other's cookies.
func TestStickySecretSharedAcrossProxies(t *testing.T) {
	secret := []byte("a shared secret of some length..")
	f := newStickyFixture(t, 3, balancer.RoundRobin, &Sticky{Secret: secret})
	who, cookie := f.get("")
	other := &Upstream{Pool: f.pool, Sticky: &Sticky{Secret: secret}}
	c := clientFor(proxyTo(t, other, Options{}).addr)
	for range 6 {
		resp := do(t, c, "GET", "example.com", "/", "Cookie", DefaultStickyCookie+"="+cookie)
		if string(resp.Body()) != who {
			t.Fatalf("second proxy sent the cookie of %s to %s", who, resp.Body())
		}
	}
}

// TestStickyOverHash: sticky and hash together: a new client lands where
// its key hashes, and the cookie keeps it there.
func TestStickyOverHash(t *testing.T) {
	f := newStickyFixture(t, 3, balancer.Hash, &Sticky{})
	who, cookie := f.get("", "X-User", "alice")
	for range 5 {
		if got, _ := f.get("", "X-User", "alice"); got != who {
			t.Fatalf("same key, no cookie: %s then %s", who, got)
		}
		if got, _ := f.get(cookie, "X-User", "someone-else"); got != who {
			t.Fatalf("cookie for %s with another key went to %s", who, got)
		}
	}
}

// TestStickyLeavesEveryIneligibleState: whatever takes the pinned backend
// out of rotation (probes, passive ejection, an open breaker, discovery
// reporting it critical, removal), its sticky clients move on the next
// request, with a new cookie.
func TestStickyLeavesEveryIneligibleState(t *testing.T) {
	for name, change := range map[string]func(*balancer.State){
		"unhealthy":    func(s *balancer.State) { s.Health = balancer.HealthUnhealthy },
		"ejected":      func(s *balancer.State) { s.Ejected = true },
		"breaker open": func(s *balancer.State) { s.Breaker = balancer.BreakerOpen },
		"critical":     func(s *balancer.State) { s.Critical = true },
		"removed":      nil,
	} {
		t.Run(name, func(t *testing.T) {
			f := newStickyFixture(t, 3, balancer.RoundRobin, &Sticky{DrainGrace: time.Hour})
			who, cookie := f.get("")
			if change != nil {
				f.pool.Update(f.pool.Lookup(f.addrOf(who)), "test", change)
			} else {
				var rest []balancer.Member
				for a, n := range f.names {
					if n != who {
						rest = append(rest, balancer.Member{Address: a})
					}
				}
				f.pool.SetMembers(balancer.SourceStatic, rest)
			}
			got, set := f.get(cookie)
			if got == who || set == "" || set == cookie {
				t.Fatalf("%s: answered by %s (pinned %s), cookie %q", name, got, who, set)
			}
		})
	}
}
