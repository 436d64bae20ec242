package proxy

import (
	"net"
	"net/netip"
	"unsafe"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// peerIP is the TCP peer's address, or the zero Addr when the connection is
// not TCP (in-memory listeners in tests).
func peerIP(ctx *fasthttp.RequestCtx) netip.Addr {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// clientKey is the key Pick gets: for ip_hash balancer.HashIP of the client
// IP, for hash the request key (requestKey). Only computed for pools that
// use it.
func (p *Proxy) clientKey(up *Upstream, h *fasthttp.RequestHeader, peer netip.Addr) uint64 {
	switch up.Pool.Algorithm() {
	case balancer.IPHash:
		return balancer.HashIP(p.clientIP(h.RawHeaders(), peer))
	case balancer.Hash:
		return p.requestKey(up, h, peer)
	}
	return 0
}

// clientIP finds the client's address. When the peer is a trusted proxy, the
// X-Forwarded-For entries (all lines, in order) are walked from the right,
// skipping trusted addresses; the first untrusted one is the client. If
// every entry is trusted (or unparsable), the leftmost trusted one is used;
// an unparsable entry stops the walk there and the last good address wins.
// Without trusted proxies, the peer is the client.
func (p *Proxy) clientIP(raw []byte, peer netip.Addr) netip.Addr {
	if len(p.trusted) == 0 || !p.isTrusted(peer) {
		return peer
	}
	client := peer
	// Collect the XFF lines' positions; walk lines from last to first.
	var lines [16][]byte
	n := 0
	forLines(raw, func(name, value []byte) {
		if equalFold(name, hdrXFF) && n < len(lines) {
			lines[n] = value
			n++
		}
	})
	for i := n - 1; i >= 0; i-- {
		v := lines[i]
		for len(v) > 0 {
			j := len(v) - 1
			for j >= 0 && v[j] != ',' {
				j--
			}
			entry := trimOWS(v[j+1:])
			if j >= 0 {
				v = v[:j]
			} else {
				v = nil
			}
			if len(entry) == 0 {
				continue
			}
			a, ok := parseForwardedAddr(entry)
			if !ok {
				return client
			}
			client = a
			if !p.isTrusted(a) {
				return a
			}
		}
	}
	return client
}

func (p *Proxy) isTrusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, pr := range p.trusted {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// parseForwardedAddr parses one X-Forwarded-For entry: an IP, an IP:port or
// a [IPv6]:port. Zones are refused. It does not allocate.
func parseForwardedAddr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	for _, c := range b {
		if c == '%' {
			return netip.Addr{}, false
		}
	}
	// The string aliases b only for the duration of the parse: netip keeps
	// no reference to its input once zones are excluded.
	s := unsafe.String(&b[0], len(b))
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
