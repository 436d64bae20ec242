package proxy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// HashSource is the part of a request a hash pool hashes.
type HashSource uint8

// Hash sources, as hash_on names them: "ip", "header:NAME", "cookie:NAME",
// "query:NAME", "path".
const (
	HashIP     HashSource = iota // the client address (trusted proxies honoured)
	HashHeader                   // the first value of a request header
	HashCookie                   // a cookie's value
	HashQuery                    // a query parameter's raw (undecoded) value
	HashPath                     // the raw path, without the query
)

// HashOn says what a hash pool (balance: hash) hashes. The zero value hashes
// the client IP, like ip_hash.
type HashOn struct {
	Source HashSource
	// Name is the header, cookie or query parameter; empty for ip and path.
	Name string
}

// ParseHashOn reads a hash_on value: "ip", "path", "header:NAME",
// "cookie:NAME" or "query:NAME". "" is "ip".
func ParseHashOn(s string) (HashOn, error) {
	switch s {
	case "", "ip":
		return HashOn{Source: HashIP}, nil
	case "path":
		return HashOn{Source: HashPath}, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	src := map[string]HashSource{"header": HashHeader, "cookie": HashCookie, "query": HashQuery}[kind]
	if !ok || src == HashIP || name == "" || strings.ContainsAny(name, " \t;=&?:") {
		return HashOn{}, fmt.Errorf("hash_on %q: want ip, path, header:NAME, cookie:NAME or query:NAME", s)
	}
	return HashOn{Source: src, Name: name}, nil
}

func (h HashOn) String() string {
	switch h.Source {
	case HashHeader:
		return "header:" + h.Name
	case HashCookie:
		return "cookie:" + h.Name
	case HashQuery:
		return "query:" + h.Name
	case HashPath:
		return "path"
	}
	return "ip"
}

// requestKey is a hash pool's key for the request: balancer.HashKey of the
// value HashOn names, or balancer.NoKey when the request has no such value
// (the pool's fallback then picks). A present but empty value is a key. It
// reads the raw header block and does not allocate.
func (p *Proxy) requestKey(up *Upstream, h *fasthttp.RequestHeader, peer netip.Addr) uint64 {
	on := &up.HashOn
	switch on.Source {
	case HashIP:
		if k := balancer.HashIP(p.clientIP(h.RawHeaders(), peer)); k != balancer.NoKey {
			return k
		}
		return 1
	case HashPath:
		return balancer.HashKey(pathOf(h.RequestURI()))
	case HashQuery:
		if v, ok := queryParam(h.RequestURI(), on.Name); ok {
			return balancer.HashKey(v)
		}
	case HashHeader:
		if v, ok := headerValue(h.RawHeaders(), on.Name); ok {
			return balancer.HashKey(v)
		}
	case HashCookie:
		if v, ok := cookieValue(h.RawHeaders(), on.Name); ok {
			return balancer.HashKey(v)
		}
	}
	return balancer.NoKey
}

// headerValue is the value of the first header line named name
// (case-insensitive).
func headerValue(raw []byte, name string) (v []byte, ok bool) {
	forLines(raw, func(n, value []byte) {
		if !ok && equalFold(n, name) {
			v, ok = value, true
		}
	})
	return v, ok
}

// cookieValue is the value of the first cookie named name (case-sensitive,
// as cookie names are) over all Cookie header lines.
func cookieValue(raw []byte, name string) (v []byte, ok bool) {
	forLines(raw, func(n, value []byte) {
		if ok || !equalFold(n, "Cookie") {
			return
		}
		for len(value) > 0 && !ok {
			pair := value
			if i := indexByte(value, ';'); i >= 0 {
				pair, value = value[:i], value[i+1:]
			} else {
				value = nil
			}
			pair = trimOWS(pair)
			if len(pair) > len(name) && pair[len(name)] == '=' && string(pair[:len(name)]) == name {
				v, ok = trimQuotes(pair[len(name)+1:]), true
			}
		}
	})
	return v, ok
}

// queryParam is the raw value of the first query parameter named name in a
// request target; a parameter without "=" has the empty value.
func queryParam(uri []byte, name string) ([]byte, bool) {
	i := indexByte(uri, '?')
	if i < 0 {
		return nil, false
	}
	q := uri[i+1:]
	if j := indexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	for len(q) > 0 {
		pair := q
		if j := indexByte(q, '&'); j >= 0 {
			pair, q = q[:j], q[j+1:]
		} else {
			q = nil
		}
		if len(pair) >= len(name) && string(pair[:len(name)]) == name {
			switch {
			case len(pair) == len(name):
				return pair[len(name):], true
			case pair[len(name)] == '=':
				return pair[len(name)+1:], true
			}
		}
	}
	return nil, false
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// trimQuotes removes the double quotes RFC 6265 allows around a cookie
// value.
func trimQuotes(v []byte) []byte {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}
