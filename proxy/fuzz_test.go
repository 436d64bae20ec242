package proxy

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzCheckRequest feeds raw requests through fasthttp's parser and kelpie's
// validation and rewrite. Invariants: no panic; an accepted request is
// HTTP/1.0 or 1.1, has at most one Content-Length, no Transfer-Encoding other
// than chunked, no obs-fold or bare CR/LF in its header block; after the rewrite exactly one
// X-Forwarded-For and one X-Request-Id remain and no hop-by-hop header does.
func FuzzCheckRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For, Keep-Alive\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1\r\nX-Request-Id: abc\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\nY: b\r\n\r\n",
		"GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/5.6\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	p, err := New(Options{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var req fasthttp.Request
		if err := req.Header.Read(bufio.NewReader(bytes.NewReader(in))); err != nil {
			return
		}
		if status, _ := p.check(&req.Header); status != 0 {
			return
		}
		if proto := string(req.Header.Protocol()); proto != "HTTP/1.1" && proto != "HTTP/1.0" {
			t.Fatalf("accepted version %q", proto)
		}
		raw := string(req.Header.RawHeaders())
		lower := strings.ToLower(raw)
		// A Transfer-Encoding field starts a line; "x-transfer-encoding:"
		// or "00000transfer-encoding:" is another field.
		for line := range strings.SplitSeq(raw, "\r\n") {
			if name, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(name, "transfer-encoding") {
				if !strings.EqualFold(strings.Trim(v, " \t"), "chunked") {
					t.Fatalf("accepted Transfer-Encoding %q", v)
				}
			}
		}
		if strings.Count(lower, "\ncontent-length:")+b2i(strings.HasPrefix(lower, "content-length:")) > 1 {
			t.Fatalf("accepted duplicate Content-Length: %q", raw)
		}
		if strings.Contains(raw, "\n ") || strings.Contains(raw, "\n\t") {
			t.Fatalf("accepted obs-fold: %q", raw)
		}
		if strings.Count(raw, "\n") != strings.Count(raw, "\r\n") || strings.Count(raw, "\r") != strings.Count(raw, "\r\n") {
			t.Fatalf("accepted bare CR or LF: %q", raw)
		}
		p.rewriteRequest(&req, netip.MustParseAddr("192.0.2.1"), false)
		xff, ids := 0, 0
		for k := range req.Header.All() {
			switch {
			case equalFold(k, hdrXFF):
				xff++
			case equalFold(k, hdrRequestID):
				ids++
			case equalFold(k, "Connection"), equalFold(k, "Keep-Alive"), equalFold(k, "Upgrade"), equalFold(k, "Te"):
				t.Fatalf("hop-by-hop %q survived", k)
			}
		}
		if xff != 1 || ids != 1 {
			t.Fatalf("X-Forwarded-For x%d, X-Request-Id x%d after rewrite of %q", xff, ids, in)
		}
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// FuzzClientIP walks arbitrary X-Forwarded-For values. Invariants: no panic,
// no allocation-dependent state; the result is the peer, or an address that
// appears in the header.
func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "6.6.6.6, 10.0.0.1", "[::1]:80, junk", "fe80::1%eth0", ",,, ,", "::ffff:1.2.3.4:80"} {
		f.Add(s)
	}
	p, err := New(Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	peer := netip.MustParseAddr("10.0.0.2")
	f.Fuzz(func(t *testing.T, xff string) {
		if strings.ContainsAny(xff, "\r\n") {
			return
		}
		got := p.clientIP([]byte("X-Forwarded-For: "+xff+"\r\n\r\n"), peer)
		if !got.IsValid() {
			t.Fatalf("invalid client IP from %q", xff)
		}
		if got != peer && !strings.Contains(xff, strings.TrimPrefix(got.String(), "::ffff:")) {
			// An address may be written differently (e.g. zero-padded forms
			// netip refuses); the parsed form must round-trip.
			if _, ok := parseForwardedAddr([]byte(got.String())); !ok {
				t.Fatalf("client %s not from %q", got, xff)
			}
		}
	})
}
