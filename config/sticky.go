package config

import (
	"fmt"
	"strings"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/kelpie-lb/kelpie/proxy"
)

// hashAndSticky checks an upstream's hash_* keys and its sticky block.
func (v *validator) hashAndSticky(i int, u *Upstream) {
	up := func(rest ...any) []any { return append([]any{"upstreams", i}, rest...) }
	if _, err := proxy.ParseHashOn(u.HashOn); err != nil {
		v.errf(up("hash_on"), "upstream %q: %v", u.Name, err)
	}
	if f := u.HashBalanceFactor; f != 0 && (f < 100 || f > 10000) {
		v.errf(up("hash_balance_factor"), "upstream %q: hash_balance_factor %d: want 0 (off) or a percentage in 100..10000 (e.g. 125)", u.Name, f)
	}
	if a, err := balancer.ParseAlgorithm(u.HashFallback); err != nil || (a != balancer.RoundRobin && a != balancer.LeastConn) {
		v.errf(up("hash_fallback"), "upstream %q: hash_fallback %q: want round_robin or least_conn", u.Name, u.HashFallback)
	}
	v.hashKeysNeedHash(up, u)
	s := u.Sticky
	if s == nil {
		return
	}
	if s.Cookie == "" || strings.ContainsFunc(s.Cookie, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r)
	}) {
		v.errf(up("sticky", "cookie"), "upstream %q: sticky.cookie %q is not a valid cookie name", u.Name, s.Cookie)
	}
	v.nonNegative(up("sticky", "ttl"), "sticky.ttl", s.TTL)
	v.nonNegative(up("sticky", "drain_grace"), "sticky.drain_grace", *s.DrainGrace)
	switch s.SameSite {
	case "lax", "strict":
	case "none":
		if !s.Secure {
			v.errf(up("sticky", "same_site"), "upstream %q: sticky.same_site none needs secure: true (browsers drop the cookie otherwise)", u.Name)
		}
	default:
		v.errf(up("sticky", "same_site"), "upstream %q: sticky.same_site %q: want lax, strict or none", u.Name, s.SameSite)
	}
}

// hashKeysNeedHash refuses hash_* keys that would do nothing: set to other
// than their defaults on an upstream whose balance is not hash. Such a key is
// almost always a forgotten `balance: hash`, and accepting it silently would
// leave the operator believing requests are keyed when they are not. Keys at
// their default values pass, so `kelpie config -defaults` output (which
// lists them for every upstream) loads as it is.
func (v *validator) hashKeysNeedHash(up func(...any) []any, u *Upstream) {
	if u.Balance == balancer.Hash.String() {
		return
	}
	for _, k := range []struct {
		key, val string
		set      bool
	}{
		{"hash_on", u.HashOn, u.HashOn != DefaultHashOn},
		{"hash_balance_factor", fmt.Sprint(u.HashBalanceFactor), u.HashBalanceFactor != 0},
		{"hash_fallback", u.HashFallback, u.HashFallback != balancer.RoundRobin.String()},
	} {
		if k.set {
			v.errf(up(k.key), "upstream %q: %s %s has no effect: balance is %s (set balance: hash, or remove %s)", u.Name, k.key, k.val, u.Balance, k.key)
		}
	}
}
