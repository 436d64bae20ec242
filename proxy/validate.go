package proxy

import (
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// check inspects a parsed request and its raw header block and returns a
// status (0 = acceptable) with a short reason. It catches what fasthttp's
// parser lets through or repairs silently: HTTP versions other than 1.0 and
// 1.1 (505), obs-fold, bare CR or LF, NUL and other control bytes,
// whitespace before a colon, Content-Length together with
// Transfer-Encoding, duplicate or non-numeric Content-Length, any
// Transfer-Encoding but a single "chunked" (501 for a coding kelpie does not
// implement, 400 when the framing itself is broken), several Hosts or none
// in HTTP/1.1, bad Host characters, non-origin-form targets, CONNECT, and
// the URI, header size and header count limits. The request line's own line
// ending is checked before fasthttp parses it (headscan.go). It does not
// allocate.
func (p *Proxy) check(h *fasthttp.RequestHeader) (int, string) {
	if proto := h.Protocol(); string(proto) != "HTTP/1.1" && string(proto) != "HTTP/1.0" {
		// fasthttp has already refused anything not shaped HTTP/d.d.
		return fasthttp.StatusHTTPVersionNotSupported, "HTTP version not supported"
	}
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
// spaces, '#' and a '%' not followed by two hex digits (as nginx does: a
// backend would refuse the malformed escape, and count against itself what
// is the client's error).
func validTarget(uri []byte, options bool) bool {
	if len(uri) == 0 {
		return false
	}
	if uri[0] != '/' {
		return options && len(uri) == 1 && uri[0] == '*'
	}
	for i, c := range uri {
		switch {
		case c <= ' ' || c == 0x7f || c == '#':
			return false
		case c == '%':
			if i+2 >= len(uri) || hexVal(uri[i+1]) < 0 || hexVal(uri[i+2]) < 0 {
				return false
			}
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
			if status, msg := transferCoding(value); status != 0 {
				return status, msg
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

// transferCoding judges a Transfer-Encoding field value. kelpie forwards only
// a single "chunked" (it re-frames bodies itself). When chunked is missing
// from the end, repeated or malformed, the body's length cannot be known and
// the answer is 400 (RFC 9112 section 6.3); a well-formed list with a coding
// kelpie does not implement (gzip, deflate, identity, ...) gets 501 (RFC 9112
// section 6.1), as nginx answers.
func transferCoding(v []byte) (int, string) {
	chunked, other := 0, false
	last := false // the last element seen was chunked
	for more := true; more; {
		elem := v
		if i := indexByte(v, ','); i >= 0 {
			elem, v = v[:i], v[i+1:]
		} else {
			more = false
		}
		elem = trimOWS(elem)
		name := elem
		params := false
		if i := indexByte(elem, ';'); i >= 0 {
			name, params = trimOWS(elem[:i]), true
		}
		if len(name) == 0 {
			return fasthttp.StatusBadRequest, "invalid Transfer-Encoding"
		}
		for _, c := range name {
			if !isTokenChar(c) {
				return fasthttp.StatusBadRequest, "invalid Transfer-Encoding"
			}
		}
		last = false
		switch {
		case equalFold(name, "chunked"):
			if params {
				return fasthttp.StatusBadRequest, "invalid Transfer-Encoding"
			}
			chunked++
			last = true
		default:
			other = true
		}
	}
	switch {
	case chunked > 1:
		return fasthttp.StatusBadRequest, "chunked applied more than once"
	case chunked == 1 && !last:
		return fasthttp.StatusBadRequest, "chunked is not the final Transfer-Encoding"
	case other:
		return fasthttp.StatusNotImplemented, "unsupported Transfer-Encoding"
	}
	return 0, ""
}

// parseErrorReason maps an error from fasthttp's header parser to kelpie's
// answer where the generic 400 would be wrong or unhelpful: a
// Transfer-Encoding fasthttp refuses is judged by transferCoding (so that an
// unknown coding gets 501), a bare LF or CR seen by the connection's head
// scan says so. ok is false for everything else.
func parseErrorReason(err error) (status int, msg string, ok bool) {
	if s := err.Error(); strings.Contains(s, "unsupported transfer-encoding: ") {
		q := s[strings.Index(s, "unsupported transfer-encoding: ")+len("unsupported transfer-encoding: "):]
		if q, qerr := strconv.QuotedPrefix(q); qerr == nil {
			if v, uerr := strconv.Unquote(q); uerr == nil {
				if status, msg := transferCoding([]byte(v)); status != 0 {
					return status, msg, true
				}
			}
		}
	}
	return 0, "", false
}

// forbiddenTrailer names the trailer field a request body read failed on,
// if fasthttp refused one (it refuses framing, routing and credential
// fields in trailers), so that the client is told which.
func forbiddenTrailer(err error) (string, bool) {
	const forbidden = "forbidden trailer key "
	if err == nil {
		return "", false
	}
	s := err.Error()
	i := strings.Index(s, forbidden)
	if i < 0 {
		return "", false
	}
	q, qerr := strconv.QuotedPrefix(s[i+len(forbidden):])
	if qerr != nil {
		return "", false
	}
	name, uerr := strconv.Unquote(q)
	return name, uerr == nil
}

// asHTTP11 makes an HTTP/1.0 request the HTTP/1.1 request kelpie sends
// upstream: an intermediary forwards in its own HTTP version (RFC 9110
// section 6.2), which also keeps the backend connection persistent (an
// HTTP/1.0 request would have the backend close it, unseen by the pool).
// HTTP/1.1 requires a Host; an HTTP/1.0 request may lack one, and then gets
// the address the client connected to, the authority RFC 7230 section 5.5
// assigns to such a request. It runs after routing (the request routes as
// having no Host) and after the rewrite (no X-Forwarded-Host is made up).
// The client connection keeps HTTP/1.0 semantics: fasthttp noted them before
// the handler ran.
func asHTTP11(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	if h.IsHTTP11() {
		return
	}
	h.SetProtocol("HTTP/1.1")
	if len(h.Host()) == 0 {
		h.SetHost(ctx.LocalAddr().String())
	}
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
