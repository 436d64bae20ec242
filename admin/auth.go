package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// isLoopbackHost reports whether host (no port) names the loopback
// interface.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// mutating guards a state-changing route:
//   - a request a browser marks cross-site, or whose Origin is not the admin
//     endpoint itself, gets 403, so no other web page can drain a backend
//     through the operator's browser;
//   - with a token configured, a missing or wrong bearer token gets 401;
//   - without one, the Host header must be localhost or an IP literal, which
//     defeats DNS rebinding against a loopback listener.
func (s *Server) mutating(h http.HandlerFunc) http.HandlerFunc {
	var want [sha256.Size]byte
	if s.opts.Token != "" {
		want = sha256.Sum256([]byte(s.opts.Token))
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if why := crossSite(r); why != "" {
			s.log.Warn("admin call refused", "reason", why, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			writeError(w, http.StatusForbidden, why)
			return
		}
		if s.opts.Token != "" {
			// Hashing first makes the comparison constant-time in the
			// token's length too.
			got := sha256.Sum256([]byte(bearer(r)))
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				s.log.Warn("admin call refused", "reason", "missing or wrong bearer token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
				w.Header().Set("WWW-Authenticate", `Bearer realm="kelpie admin"`)
				writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
				return
			}
		} else if host := requestHost(r); host != "" && !isLoopbackHost(host) {
			if _, err := netip.ParseAddr(host); err != nil {
				why := fmt.Sprintf("host %q is not allowed without an admin token", host)
				s.log.Warn("admin call refused", "reason", why, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
				writeError(w, http.StatusForbidden, why)
				return
			}
		}
		h(w, r)
	}
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
// Without one it returns "\x00", which no token from an environment
// variable can equal.
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "\x00" // cannot equal a configured token read from the environment
	}
	return strings.TrimSpace(tok)
}

// crossSite explains why r comes from another web origin, or returns "".
func crossSite(r *http.Request) string {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return "cross-site request refused"
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return "cross-origin request refused"
	}
	return ""
}

// requestHost is the Host header without its port.
func requestHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		return h
	}
	return strings.Trim(r.Host, "[]")
}
