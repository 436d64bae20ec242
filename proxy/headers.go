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
// touch are forwarded as received. It does not allocate for headers up to
// the scratch buffer's size.
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
	var ids [1][]byte
	hasID := false
	// One pass over the raw header block notes which of the headers kelpie
	// removes are present; only those are deleted below. Each Del normalises
	// its key and scans every header, and most requests carry none of them.
	var present uint32
	forLines(raw, func(name, value []byte) {
		if i := removedIndex(name); i >= 0 {
			present |= 1 << i
		}
		switch {
		case equalFold(name, "Connection"):
			forTokens(value, func(tok []byte) {
				if !isProtected(tok) {
					h.DelBytes(tok)
				}
			})
		case equalFold(name, hdrXFF):
			if len(xff) > 0 {
				xff = append(xff, ", "...)
			}
			xff = append(xff, value...)
		case equalFold(name, hdrRequestID):
			ids[0], hasID = value, validRequestID(value)
		case p.opts.FencingHeader != "" && equalFold(name, p.opts.FencingHeader):
			h.DelBytes(name) // only kelpie may claim a token
		case dropName(name):
			h.DelBytes(name)
		}
	})
	if len(raw) == 0 {
		present = ^uint32(0) // no raw block to consult (a request built in code)
	}
	for i, name := range removed {
		if present&(1<<i) != 0 {
			h.Del(name)
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
		h.Del(hdrRequestID)
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
// Connection) from an upstream response, and clears Connection: close so a
// backend closing its connection does not close the client's.
func cleanResponse(h *fasthttp.ResponseHeader) {
	h.ResetConnectionClose()
	var buf [maxConnTokens][]byte
	toks := buf[:0]
	var present uint32
	for k, v := range h.All() {
		i := hopIndex(k)
		if i < 0 {
			continue
		}
		present |= 1 << i
		if i == 0 { // Connection: the headers it names are hop-by-hop too
			forTokens(v, func(tok []byte) {
				if len(toks) < len(buf) && !equalFold(tok, "Content-Length") && !equalFold(tok, "Transfer-Encoding") {
					toks = append(toks, tok)
				}
			})
		}
	}
	if present == 0 {
		return // the common case: nothing to delete, no key normalised
	}
	for _, t := range toks {
		if !equalFold(t, "Connection") && !equalFold(t, "close") && !equalFold(t, "keep-alive") {
			h.DelBytes(t)
		}
	}
	for i := len(hopHeaders) - 1; i >= 0; i-- {
		if present&(1<<i) != 0 {
			h.Del(hopHeaders[i])
		}
	}
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
