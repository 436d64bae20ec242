package proxy

import (
	"net/netip"
	"strconv"

	"github.com/valyala/fasthttp"
)

// Header names kelpie manages.
const (
	hdrXFF         = "X-Forwarded-For"
	hdrXFProto     = "X-Forwarded-Proto"
	hdrXFHost      = "X-Forwarded-Host"
	hdrRequestID   = "X-Request-Id"
	maxRequestID   = 128
	maxConnTokens  = 32
	scratchDefault = 256
)

// hopHeaders are the hop-by-hop headers (RFC 9110 section 7.6.1, as Go's
// httputil.ReverseProxy) that cleanResponse removes from responses.
// Requests lose the same ones through removed, which adds Expect and the
// forwarding headers.
var hopHeaders = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Upgrade",
}

// protected names can never be removed by being listed in Connection: the
// framing and Host the backend needs, and the headers kelpie sets.
var protected = [...]string{
	"Host", "Content-Length", "Transfer-Encoding",
	hdrXFF, hdrXFProto, hdrXFHost, hdrRequestID,
}

// removed are the request headers kelpie deletes before setting its own:
// the hop-by-hop ones, Expect (fasthttp answers 100-continue itself) and the
// forwarding headers it rewrites.
var removed = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Upgrade",
	"Expect", hdrXFF, hdrXFProto, hdrXFHost,
}

// removedIndex is name's index in removed, or -1.
func removedIndex(name []byte) int {
	for i, r := range removed {
		if equalFold(name, r) {
			return i
		}
	}
	return -1
}

// managed are the headers whose look-alike spellings ("X_Forwarded_For",
// "X.Forwarded.For") are dropped: backends that fold '_' or '.' into '-'
// (CGI, PHP, WSGI) would otherwise see a client-forged copy.
var managed = [...]string{hdrXFF, hdrXFProto, hdrXFHost, hdrRequestID, "X-Real-Ip", "Forwarded"}

func isProtected(name []byte) bool {
	for _, p := range protected {
		if equalFold(name, p) {
			return true
		}
	}
	return false
}

// rewriteRequest turns a validated client request into the upstream request,
// in place: hop-by-hop headers and everything named in Connection go (never a
// protected header), underscore names and look-alikes of managed headers go,
// the client's Connection: close is not forwarded, X-Forwarded-For gets the
// peer appended, X-Forwarded-Proto/Host are set, X-Request-Id is generated
// when absent or unusable. Host and the raw request target are kept. It
// works from the raw header block, so cookies and other headers it does not
// touch are forwarded as received, names in the client's spelling (header
// names are not normalised: a name is deleted in every spelling it came in,
// see delFold). It does not allocate for headers up to the scratch buffer's
// size.
func (p *Proxy) rewriteRequest(req *fasthttp.Request, peer netip.Addr, tls bool) {
	h := &req.Header
	raw := h.RawHeaders()
	h.ResetConnectionClose()
	req.UseHostHeader = true
	if tls {
		req.URI().SetScheme("http")
	}

	var scratch [scratchDefault]byte
	xff := scratch[:0]
	var tokBuf [maxConnTokens][]byte
	toks := tokBuf[:0] // names the client listed in Connection
	hasID, idSeen, del := false, false, false
	// One pass over the raw header block notes what is to be deleted; a
	// second, only when something is, deletes each such line under the
	// name it came with. Most requests need no second pass.
	forLines(raw, func(name, value []byte) {
		switch {
		case removedIndex(name) >= 0:
			del = true
			if equalFold(name, "Connection") {
				forTokens(value, func(tok []byte) {
					if !isProtected(tok) && len(toks) < len(tokBuf) {
						toks = append(toks, tok)
					}
				})
			} else if equalFold(name, hdrXFF) {
				if len(xff) > 0 {
					xff = append(xff, ", "...)
				}
				xff = append(xff, value...)
			}
		case equalFold(name, hdrRequestID):
			idSeen, hasID = true, validRequestID(value)
		case p.isFencing(name): // only kelpie may claim a token
			del = true
		case dropName(name):
			del = true
		}
	})
	if len(raw) == 0 {
		// No raw block to consult (a request built in code): delete by the
		// names alone.
		for _, name := range removed {
			delFold(h, []byte(name))
		}
		if p.opts.FencingHeader != "" {
			delFold(h, []byte(p.opts.FencingHeader))
		}
	} else if del || idSeen && !hasID {
		// fasthttp deletes by moving the last line into the freed slot,
		// which reorders what remains (RFC 9110 section 5.3: the order of
		// same-name lines is significant). So every line that lives in the
		// general list is taken out and those that stay are added back in
		// the order of the raw block, which fasthttp keeps apart from the
		// list. Special handling is off meanwhile, so a Cookie line goes
		// back as the line it was, not into the parsed cookie jar.
		forLines(raw, func(name, _ []byte) {
			if !dedicatedRequest(name) {
				delFold(h, name)
			}
		})
		special := !h.DisableSpecialHeader()
		forLines(raw, func(name, value []byte) {
			if dedicatedRequest(name) || removedIndex(name) >= 0 || dropName(name) ||
				!hasID && equalFold(name, hdrRequestID) || foldIn(name, toks) || p.isFencing(name) {
				return
			}
			h.AddBytesKV(name, value)
		})
		if special {
			h.EnableSpecialHeader()
		}
	}

	if peer.IsValid() {
		if len(xff) > 0 {
			xff = append(xff, ", "...)
		}
		xff = peer.Unmap().AppendTo(xff)
	}
	if len(xff) > 0 {
		h.SetBytesV(hdrXFF, xff)
	}
	if tls {
		h.Set(hdrXFProto, "https")
	} else {
		h.Set(hdrXFProto, "http")
	}
	if host := h.Host(); len(host) > 0 {
		h.SetBytesV(hdrXFHost, host)
	}
	if !hasID {
		var id [33]byte
		h.SetBytesV(hdrRequestID, p.newRequestID(id[:0]))
	}
	if p.opts.FencingHeader != "" && p.opts.FencingToken != nil {
		if tok := p.opts.FencingToken(); tok != 0 {
			var buf [20]byte
			h.SetBytesV(p.opts.FencingHeader, strconv.AppendUint(buf[:0], tok, 10))
		}
	}
}

// isFencing reports whether name is the fencing header (Options.FencingHeader).
func (p *Proxy) isFencing(name []byte) bool {
	return p.opts.FencingHeader != "" && equalFold(name, p.opts.FencingHeader)
}

// headerDeleter is a request or response header.
type headerDeleter interface {
	DelBytes(key []byte)
	EnableNormalizing() bool
	DisableNormalizing() bool
}

// delFold deletes the header name in the spelling given and in canonical
// case. kelpie's headers keep the names as they came (fasthttp's
// DisableHeaderNamesNormalizing), so a deletion matches bytes exactly; the
// canonical spelling also clears the fields fasthttp keeps apart
// (Content-Type, User-Agent, Cookie, Connection, Trailer, Server).
func delFold(h headerDeleter, name []byte) {
	h.DelBytes(name)
	if !h.EnableNormalizing() {
		return // names were normalised anyway: one deletion did it
	}
	h.DelBytes(name)
	h.DisableNormalizing()
}

// foldIn reports whether name equals one of names, ignoring case.
func foldIn(name []byte, names [][]byte) bool {
	for _, n := range names {
		if len(n) == len(name) && equalFold(name, string(n)) {
			return true
		}
	}
	return false
}

// peekFold is the value of the first header named name in any case.
func peekFold(h *fasthttp.RequestHeader, name string) []byte {
	for k, v := range h.All() {
		if equalFold(k, name) {
			return v
		}
	}
	return nil
}

// newRequestID appends a unique id: 16 hex digits chosen at random when the
// process starts, '-', and 16 hex digits of a per-process counter. Unique
// without a random read per request.
func (p *Proxy) newRequestID(dst []byte) []byte {
	const digits = "0123456789abcdef"
	dst = append(dst, p.idPrefix[:]...)
	dst = append(dst, '-')
	n := p.idSeq.Add(1)
	for i := 60; i >= 0; i -= 4 {
		dst = append(dst, digits[(n>>uint(i))&0xf])
	}
	return dst
}

// validRequestID keeps a client's X-Request-Id only if it is short and
// printable; otherwise kelpie replaces it.
func validRequestID(v []byte) bool {
	if len(v) == 0 || len(v) > maxRequestID {
		return false
	}
	for _, c := range v {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// dropName reports whether a request header name is dropped: any name with
// an underscore, and dotted spellings of managed headers.
func dropName(name []byte) bool {
	dotted := false
	for _, c := range name {
		switch c {
		case '_':
			return true
		case '.':
			dotted = true
		}
	}
	if !dotted {
		return false
	}
	for _, m := range managed {
		if len(m) != len(name) {
			continue
		}
		same := true
		for i := range len(m) {
			c := name[i]
			if c == '.' {
				c = '-'
			}
			if c|0x20 != m[i]|0x20 {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}

// cleanResponse strips hop-by-hop headers (and those the backend named in
// Connection) from an upstream response, in every spelling they came in,
// strips X-Kelpie-Reached-Backend (only kelpie's own 502/504 carry it: a
// backend's copy would forge it for the client and the access log), and clears Connection: close so a backend closing its connection does not
// close the client's. src is the header h was copied from (unchanged): the
// remaining lines are rebuilt from it, in its order.
func cleanResponse(h, src *fasthttp.ResponseHeader) {
	h.ResetConnectionClose()
	var buf [maxConnTokens][]byte
	toks := buf[:0] // point into src, which the rebuild below leaves alone
	del := false
	for k, v := range src.All() {
		if equalFold(k, HeaderReachedBackend) {
			del = true
			continue
		}
		i := hopIndex(k)
		if i < 0 {
			continue
		}
		del = true
		if i == 0 { // Connection: the headers it names are hop-by-hop too
			forTokens(v, func(tok []byte) {
				if len(toks) < len(buf) && !equalFold(tok, "Content-Length") && !equalFold(tok, "Transfer-Encoding") &&
					!equalFold(tok, "Connection") && !equalFold(tok, "close") && !equalFold(tok, "keep-alive") {
					toks = append(toks, tok)
				}
			})
		}
	}
	if !del {
		return // the common case: nothing to delete
	}
	// A deletion moves the last line into the freed slot (see
	// rewriteRequest), so the general list is rebuilt from src in its
	// order: several Set-Cookie-like or Vary lines keep their sequence.
	for k := range src.All() {
		if !dedicatedResponse(k) {
			delFold(h, k)
		}
	}
	for k, v := range src.All() {
		if dedicatedResponse(k) || hopIndex(k) >= 0 || foldIn(k, toks) || equalFold(k, HeaderReachedBackend) {
			continue
		}
		h.AddBytesKV(k, v)
	}
}

// dedicatedRequest reports whether fasthttp keeps a request header in a
// field of its own rather than in the ordered list of lines: those go out
// first in any case, and a deletion elsewhere does not move them.
func dedicatedRequest(name []byte) bool {
	return equalFold(name, "Host") || equalFold(name, "Content-Length") || equalFold(name, "Content-Type") ||
		equalFold(name, "Transfer-Encoding") || equalFold(name, "User-Agent")
}

// dedicatedResponse is dedicatedRequest for responses; Date is managed by
// fasthttp (an added one is ignored), so it is left where it is too.
func dedicatedResponse(name []byte) bool {
	return equalFold(name, "Content-Length") || equalFold(name, "Content-Type") || equalFold(name, "Content-Encoding") ||
		equalFold(name, "Server") || equalFold(name, "Set-Cookie") || equalFold(name, "Transfer-Encoding") ||
		equalFold(name, "Date")
}

// hopIndex is name's index in hopHeaders, or -1.
func hopIndex(name []byte) int {
	for i, hh := range hopHeaders {
		if equalFold(name, hh) {
			return i
		}
	}
	return -1
}

func forLines(raw []byte, fn func(name, value []byte)) {
	for len(raw) > 0 {
		end := 0
		for end < len(raw) && raw[end] != '\n' {
			end++
		}
		line := raw[:end]
		if end < len(raw) {
			raw = raw[end+1:]
		} else {
			raw = nil
		}
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) == 0 {
			return
		}
		for i, c := range line {
			if c == ':' {
				fn(line[:i], trimOWS(line[i+1:]))
				break
			}
		}
	}
}

// forTokens calls fn for each non-empty comma-separated token of v.
func forTokens(v []byte, fn func(tok []byte)) {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		if tok := trimOWS(v[:i]); len(tok) > 0 {
			fn(tok)
		}
		if i == len(v) {
			return
		}
		v = v[i+1:]
	}
}
