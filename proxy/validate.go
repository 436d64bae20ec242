package proxy

import (
	"github.com/valyala/fasthttp"
)

// check inspects a parsed request and its raw header block and returns a
// status (0 = acceptable) with a short reason. It catches what fasthttp's
// parser lets through or repairs silently: obs-fold, bare CR or LF, NUL and
// other control bytes, whitespace before a colon, Content-Length together
// with Transfer-Encoding, duplicate or non-numeric Content-Length, any
// Transfer-Encoding but a single "chunked", several or missing Host, bad Host
// characters, non-origin-form targets, CONNECT, and the URI, header size and
// header count limits. It does not allocate.
func (p *Proxy) check(h *fasthttp.RequestHeader) (int, string) {
	if h.IsConnect() {
		return fasthttp.StatusMethodNotAllowed, "CONNECT is not supported"
	}
	uri := h.RequestURI()
	if len(uri) > p.opts.MaxURIBytes {
		return fasthttp.StatusRequestURITooLong, "request target too long"
	}
	if !validTarget(uri, h.IsOptions()) {
		return fasthttp.StatusBadRequest, "invalid request target"
	}
	raw := h.RawHeaders()
	if len(raw) > p.opts.MaxHeaderBytes {
		return fasthttp.StatusRequestHeaderFieldsTooLarge, "request header too large"
	}
	return checkRaw(raw, h.IsHTTP11(), p.opts.MaxHeaderCount)
}

// validTarget accepts origin-form targets ("/path?query") and "*" for
// OPTIONS. Absolute-form is refused so that a target can never choose a
// different host than the Host header kelpie routes on; so are control bytes,
// spaces and '#'.
func validTarget(uri []byte, options bool) bool {
	if len(uri) == 0 {
		return false
	}
	if uri[0] != '/' {
		return options && len(uri) == 1 && uri[0] == '*'
	}
	for _, c := range uri {
		if c <= ' ' || c == 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// checkRaw validates a raw header block (the header lines after the request
// line, each ending in CRLF, with or without the final empty line).
func checkRaw(raw []byte, http11 bool, maxCount int) (int, string) {
	var hosts, cls, tes, count int
	for len(raw) > 0 {
		// One line, which must end in CRLF.
		end := -1
		for i, c := range raw {
			if c == '\n' {
				end = i
				break
			}
		}
		if end < 1 || raw[end-1] != '\r' {
			return fasthttp.StatusBadRequest, "bare LF or unterminated header line"
		}
		line := raw[:end-1]
		raw = raw[end+1:]
		if len(line) == 0 {
			break // end of the header block
		}
		if line[0] == ' ' || line[0] == '\t' {
			return fasthttp.StatusBadRequest, "obsolete line folding"
		}
		count++
		if count > maxCount {
			return fasthttp.StatusRequestHeaderFieldsTooLarge, "too many header fields"
		}
		colon := -1
		for i, c := range line {
			if c == ':' {
				colon = i
				break
			}
			if !isTokenChar(c) {
				return fasthttp.StatusBadRequest, "invalid header name"
			}
		}
		if colon <= 0 {
			return fasthttp.StatusBadRequest, "invalid header name"
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range value {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return fasthttp.StatusBadRequest, "control character in header value"
			}
		}
		switch {
		case equalFold(name, "Host"):
			hosts++
			if !validHost(value) {
				return fasthttp.StatusBadRequest, "invalid Host"
			}
		case equalFold(name, "Content-Length"):
			cls++
			if len(value) == 0 || len(value) > 18 {
				return fasthttp.StatusBadRequest, "invalid Content-Length"
			}
			for _, c := range value {
				if c < '0' || c > '9' {
					return fasthttp.StatusBadRequest, "invalid Content-Length"
				}
			}
		case equalFold(name, "Transfer-Encoding"):
			tes++
			if !equalFold(value, "chunked") {
				return fasthttp.StatusBadRequest, "unsupported Transfer-Encoding"
			}
		}
	}
	switch {
	case hosts > 1:
		return fasthttp.StatusBadRequest, "more than one Host"
	case hosts == 0 && http11:
		return fasthttp.StatusBadRequest, "missing Host"
	case cls > 1:
		return fasthttp.StatusBadRequest, "duplicate Content-Length"
	case tes > 1:
		return fasthttp.StatusBadRequest, "duplicate Transfer-Encoding"
	case cls > 0 && tes > 0:
		return fasthttp.StatusBadRequest, "Content-Length with Transfer-Encoding"
	case tes > 0 && !http11:
		return fasthttp.StatusBadRequest, "Transfer-Encoding in HTTP/1.0"
	}
	return 0, ""
}

// validHost accepts reg-name, IPv4 and bracketed IPv6 hosts with an optional
// port (RFC 3986 characters only; no userinfo, path or whitespace).
func validHost(v []byte) bool {
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == ':', c == '[', c == ']', c == '%',
			c == '!', c == '$', c == '&', c == '\'', c == '(', c == ')', c == '*', c == '+', c == ',', c == ';', c == '=':
		default:
			return false
		}
	}
	return true
}

// isTokenChar reports whether c may appear in a header name (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	return tokenTable[c]
}

var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares ASCII case-insensitively without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if lx := x | 0x20; lx < 'a' || lx > 'z' || lx != y|0x20 {
			return false
		}
	}
	return true
}
