package admin

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/kelpie-lb/kelpie/balancer"
)

// maxAddressLen bounds the {address} path segment; a DNS name is at most 253
// bytes, plus brackets, colon and port.
const maxAddressLen = 300

// canonicalAddress puts a "host:port" into one canonical spelling so that
// "[0:0::1]:080" and "[::1]:80" name the same backend: IP literals in
// net/netip form, host names lowercased without a trailing dot, the port in
// decimal without leading zeros. ok is false for anything that is not a
// host and a port 1-65535 (a bare IPv6 address without brackets included,
// since "::1:80" is ambiguous).
func canonicalAddress(addr string) (canon string, ok bool) {
	if addr == "" || len(addr) > maxAddressLen {
		return "", false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" || len(port) > 5 {
		return "", false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip, uint16(n)).String(), true
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || strings.HasPrefix(host, ".") || strings.HasSuffix(host, ".") || strings.Contains(host, "..") {
		return "", false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return "", false
		}
	}
	return net.JoinHostPort(host, strconv.FormatUint(n, 10)), true
}

// findBackend returns the member of p that addr names: the exact address the
// sources gave, or failing that the member with the same canonical form.
// nil when none.
func findBackend(p *balancer.Pool, addr string) *balancer.Backend {
	if b := p.Lookup(addr); b != nil {
		return b
	}
	want, ok := canonicalAddress(addr)
	if !ok {
		return nil
	}
	for _, b := range p.Snapshot().Members {
		if got, ok := canonicalAddress(b.Address()); ok && got == want {
			return b
		}
	}
	return nil
}
