package proxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// DefaultStickyCookie is Sticky.Cookie's default name.
const DefaultStickyCookie = "kelpie_sticky"

// DefaultStickyDrainGrace is the config file's sticky.drain_grace: how long
// a drained backend keeps its sticky clients. Sticky's zero DrainGrace
// moves them at once.
const DefaultStickyDrainGrace = 5 * time.Second

// Sticky pins each client to one backend with a cookie (session
// affinity), on top of any balance algorithm. The first response sets the
// cookie; later requests carrying it go to the backend it names while that
// backend is eligible. When it is not (unhealthy, ejected, breaker open,
// removed, or a backup no longer needed) the request is balanced as if it
// had no cookie and the response carries a new cookie. A drained backend
// keeps its sticky clients for DrainGrace after the drain, so sessions can
// finish; new clients never reach it.
//
// The cookie value never contains the backend's address: it is an HMAC of
// the upstream name and address under Secret, so a client can only name a
// backend kelpie itself handed out, and only while it is in the pool; any
// other value counts as no cookie. A Sticky is read-only once handed to New
// or SetRoutes (it keeps an internal lookup table) and belongs to one
// Upstream.
type Sticky struct {
	// Cookie is the cookie's name. Default DefaultStickyCookie.
	Cookie string
	// TTL is the cookie's Max-Age. 0: a session cookie, gone when the
	// browser closes.
	TTL time.Duration
	// Secure sends the cookie over HTTPS only.
	Secure bool
	// HTTPOnly hides the cookie from scripts.
	HTTPOnly bool
	// SameSite is "lax", "strict", "none" or "" (attribute not sent).
	SameSite string
	// DrainGrace is how long a drained backend keeps its sticky clients.
	// 0 moves them at once.
	DrainGrace time.Duration
	// Secret keys the HMAC of cookie values. Empty: the Proxy's own random
	// key, made at start, so cookies stay valid across config reloads but
	// not across restarts, nor between several kelpie instances (their
	// clients are then re-balanced once). Set it (sticky.secret_env) to
	// share sessions between instances and restarts.
	Secret []byte

	now   func() time.Time // nil: time.Now (tests set a fake clock)
	table atomic.Pointer[stickyTable]
}

// stickyTable maps cookie values to the members of one snapshot. It is
// rebuilt by the first request that sees a new snapshot; cookie values are
// carried over from the previous table, so a rebuild computes HMACs only
// for new members.
type stickyTable struct {
	snap    *balancer.Snapshot
	values  []string       // cookie value of each of snap.Members
	byValue map[string]int // cookie value -> index in snap.Members
}

// stickyValueBytes is how much of the HMAC-SHA256 a cookie value keeps:
// 96 bits, 16 characters of base64url. Guessing a valid value takes about
// 2^95 tries, and a valid value only names a backend that is in the pool.
const stickyValueBytes = 12

// newStickyKey is a Proxy's per-process HMAC key for Sticky values.
func newStickyKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("sticky cookie key: %w", err)
	}
	return k, nil
}

func stickyValue(key []byte, upstream, addr string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(upstream))
	m.Write([]byte{0})
	m.Write([]byte(addr))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:stickyValueBytes])
}

func (s *Sticky) tableFor(snap *balancer.Snapshot, upstream string, key []byte) *stickyTable {
	old := s.table.Load()
	if old != nil && old.snap == snap {
		return old
	}
	t := &stickyTable{snap: snap, values: make([]string, len(snap.Members)), byValue: make(map[string]int, len(snap.Members))}
	for i, b := range snap.Members {
		v := ""
		if old != nil {
			if j, ok := slices.BinarySearchFunc(old.snap.Members, b.Address(), byAddress); ok {
				v = old.values[j]
			}
		}
		if v == "" {
			v = stickyValue(key, upstream, b.Address())
		}
		t.values[i] = v
		t.byValue[v] = i
	}
	// Racing requests may each build one; any of them is right for snap.
	s.table.Store(t)
	return t
}

// byAddress orders Snapshot.Members, which are sorted by address.
func byAddress(b *balancer.Backend, addr string) int { return strings.Compare(b.Address(), addr) }

func (s *Sticky) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func (s *Sticky) cookieName() string {
	if s.Cookie == "" {
		return DefaultStickyCookie
	}
	return s.Cookie
}

// stickyPin is what a request's sticky cookie says.
type stickyPin struct {
	b        *balancer.Backend // the cookie's backend, when it may take this request
	draining bool              // b is drained but within the grace: admit it anyway
	now      time.Time         // when the grace was judged
}

// pinned reads the request's sticky cookie. The pin is empty when up is not
// sticky, the cookie is absent or forged, or its backend may not take the
// request.
func (p *Proxy) pinned(ctx *fasthttp.RequestCtx, up *Upstream) stickyPin {
	s := up.Sticky
	if s == nil {
		return stickyPin{}
	}
	v, ok := cookieValue(ctx.Request.Header.RawHeaders(), s.cookieName())
	if !ok {
		return stickyPin{}
	}
	snap := up.Pool.Snapshot()
	t := s.tableFor(snap, up.Pool.Name(), p.stickyKey(s))
	i, ok := t.byValue[string(v)]
	if !ok {
		return stickyPin{}
	}
	b := snap.Members[i]
	if snap.Eligible(i) {
		return stickyPin{b: b}
	}
	if s.DrainGrace > 0 && b.Down() == balancer.ReasonDrain {
		now := s.clock()
		if since := b.State().DrainedSince(); !since.IsZero() && now.Sub(since) < s.DrainGrace {
			return stickyPin{b: b, draining: true, now: now}
		}
	}
	return stickyPin{}
}

// first is the request's first backend: the pinned one, else the pool's pick.
func (pin *stickyPin) first(pool *balancer.Pool, key uint64) *balancer.Backend {
	if pin.b != nil {
		return pin.b
	}
	return pool.Pick(key, nil)
}

// begin is Proxy.begin, except that the pinned backend, while draining
// within its grace, is admitted too.
func (pin *stickyPin) begin(p *Proxy, up *Upstream, b *balancer.Backend) (attempt, bool) {
	if pin.draining && b == pin.b {
		return p.admit(up, b, b.AcquireDraining(up.Sticky.DrainGrace, pin.now))
	}
	return p.begin(up, b)
}

// stickyReply sets the sticky cookie on the response of backend b when the
// request was not already pinned to b: a new client, a forged or stale
// cookie, or a pinned backend that could not answer.
func (p *Proxy) stickyReply(ctx *fasthttp.RequestCtx, up *Upstream, b *balancer.Backend, pin *stickyPin) {
	s := up.Sticky
	if s == nil || b == nil || b == pin.b {
		return
	}
	t := s.tableFor(up.Pool.Snapshot(), up.Pool.Name(), p.stickyKey(s))
	i, ok := slices.BinarySearchFunc(t.snap.Members, b.Address(), byAddress)
	if !ok || t.snap.Members[i] != b {
		return // left the pool meanwhile: pin nobody
	}
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(s.cookieName())
	c.SetValue(t.values[i])
	c.SetPath("/")
	if s.TTL > 0 {
		c.SetMaxAge(int(max(s.TTL/time.Second, 1)))
	}
	c.SetSecure(s.Secure)
	c.SetHTTPOnly(s.HTTPOnly)
	switch s.SameSite {
	case "lax":
		c.SetSameSite(fasthttp.CookieSameSiteLaxMode)
	case "strict":
		c.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	case "none":
		c.SetSameSite(fasthttp.CookieSameSiteNoneMode)
	}
	ctx.Response.Header.SetCookie(c)
}

// stickyKey is the HMAC key for s: its Secret, else the Proxy's own.
func (p *Proxy) stickyKey(s *Sticky) []byte {
	if len(s.Secret) > 0 {
		return s.Secret
	}
	return p.stickySecret
}
