package proxy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/kelpie-lb/kelpie/metrics"
)

// table is an immutable route table, swapped whole by SetRoutes.
type table struct {
	hosts map[string][]*Route // lower-case host without port -> routes, longest prefix first
	any   []*Route            // Host "" routes, longest prefix first
}

func buildTable(routes []Route) (*table, error) {
	t := &table{hosts: map[string][]*Route{}}
	seen := map[[2]string]bool{}
	for i := range routes {
		r := routes[i] // copy: the caller may reuse its slice
		if r.Upstream == nil || r.Upstream.Pool == nil {
			return nil, fmt.Errorf("%w: route %d (host %q, path_prefix %q) has no upstream pool", ErrBadRoute, i, r.Host, r.PathPrefix)
		}
		if r.Upstream.Stats == nil {
			r.Upstream.Stats = new(metrics.UpstreamStats) // before any request reads it
		}
		host := strings.ToLower(stripPort(r.Host))
		key := [2]string{host, r.PathPrefix}
		if seen[key] {
			return nil, fmt.Errorf("%w: duplicate route host %q path_prefix %q", ErrBadRoute, r.Host, r.PathPrefix)
		}
		seen[key] = true
		if host == "" {
			t.any = append(t.any, &r)
		} else {
			t.hosts[host] = append(t.hosts[host], &r)
		}
	}
	byLen := func(a, b *Route) int { return cmp.Compare(len(b.PathPrefix), len(a.PathPrefix)) }
	slices.SortStableFunc(t.any, byLen)
	for _, rs := range t.hosts {
		slices.SortStableFunc(rs, byLen)
	}
	return t, nil
}

// maxHostLen bounds the stack buffer match lower-cases a Host into; longer
// hosts match only "" routes.
const maxHostLen = 255

// match returns the route for a request's raw Host header and raw path:
// routes for the exact host (case-insensitive, port ignored) first, then
// routes for any host; within each, the longest matching prefix. nil when
// nothing matches. It does not allocate.
func (t *table) match(host, path []byte) *Route {
	if len(t.hosts) > 0 {
		h := stripPortBytes(host)
		if len(h) <= maxHostLen {
			var buf [maxHostLen]byte
			lh := buf[:len(h)]
			for i, c := range h {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				lh[i] = c
			}
			if r := longest(t.hosts[string(lh)], path); r != nil {
				return r
			}
		}
	}
	return longest(t.any, path)
}

var rootPath = []byte("/")

func longest(rs []*Route, path []byte) *Route {
	for _, r := range rs {
		if len(path) >= len(r.PathPrefix) && string(path[:len(r.PathPrefix)]) == r.PathPrefix {
			return r
		}
	}
	return nil
}

// pathOf returns the path part of a raw request target (before '?'). The
// asterisk-form target of "OPTIONS *" routes as the path "/": it asks about
// the server as a whole, which is what the host's root route serves.
func pathOf(uri []byte) []byte {
	if len(uri) == 1 && uri[0] == '*' {
		return rootPath
	}
	for i, c := range uri {
		if c == '?' {
			return uri[:i]
		}
	}
	return uri
}

// stripPortBytes removes a ":port" suffix from a Host value, keeping IPv6
// literals ("[::1]:80" -> "[::1]").
func stripPortBytes(h []byte) []byte {
	for i := len(h) - 1; i >= 0; i-- {
		switch h[i] {
		case ':':
			return h[:i]
		case ']':
			return h
		}
	}
	return h
}

func stripPort(h string) string { return string(stripPortBytes([]byte(h))) }
