package proxy

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

func TestParseHashOn(t *testing.T) {
	for in, want := range map[string]HashOn{
		"": {Source: HashIP}, "ip": {Source: HashIP}, "path": {Source: HashPath},
		"header:X-User": {HashHeader, "X-User"}, "cookie:sid": {HashCookie, "sid"}, "query:tenant": {HashQuery, "tenant"},
	} {
		got, err := ParseHashOn(in)
		if err != nil || got != want {
			t.Errorf("ParseHashOn(%q) = %v, %v; want %v", in, got, err, want)
		}
		if in != "" && got.String() != in {
			t.Errorf("%q prints as %q", in, got.String())
		}
	}
	for _, bad := range []string{"header", "header:", "cookie:a b", "query:a=b", "uri", "host:x", "ip:x"} {
		if _, err := ParseHashOn(bad); err == nil {
			t.Errorf("ParseHashOn(%q) accepted", bad)
		}
	}
}

// TestRequestKey: each source finds its value in the raw request (and the
// same value gives the same key whatever else differs), and a request
// without it gets NoKey.
func TestRequestKey(t *testing.T) {
	p, err := New(Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	peer := netip.MustParseAddr("192.0.2.7")
	key := func(on HashOn, req string) uint64 {
		t.Helper()
		var r fasthttp.Request
		if err := r.Header.Read(bufio.NewReader(strings.NewReader(req))); err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		return p.requestKey(&Upstream{HashOn: on}, &r.Header, peer)
	}
	val := func(s string) uint64 { return balancer.HashKey([]byte(s)) }
	for _, tc := range []struct {
		on   HashOn
		req  string
		want uint64
	}{
		{HashOn{HashHeader, "X-User"}, "GET / HTTP/1.1\r\nHost: h\r\nx-user: alice\r\n\r\n", val("alice")},
		{HashOn{HashHeader, "X-User"}, "GET /other HTTP/1.1\r\nHost: h\r\nX-User: alice\r\nX-User: bob\r\n\r\n", val("alice")},
		{HashOn{HashHeader, "X-User"}, "GET / HTTP/1.1\r\nHost: h\r\nX-User:\r\n\r\n", val("")},
		{HashOn{HashHeader, "X-User"}, "GET / HTTP/1.1\r\nHost: h\r\nX-Userx: a\r\n\r\n", balancer.NoKey},
		{HashOn{HashCookie, "sid"}, "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; sid=s1; b=2\r\n\r\n", val("s1")},
		{HashOn{HashCookie, "sid"}, "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: sid=\"s1\"\r\n\r\n", val("s1")},
		{HashOn{HashCookie, "sid"}, "GET / HTTP/1.1\r\nHost: h\r\nCookie: xsid=s1; SID=s2\r\n\r\n", balancer.NoKey},
		{HashOn{HashQuery, "t"}, "GET /p?a=1&t=acme&t=x HTTP/1.1\r\nHost: h\r\n\r\n", val("acme")},
		{HashOn{HashQuery, "t"}, "GET /p?tt=1&t HTTP/1.1\r\nHost: h\r\n\r\n", val("")},
		{HashOn{HashQuery, "t"}, "GET /p?tt=1 HTTP/1.1\r\nHost: h\r\n\r\n", balancer.NoKey},
		{HashOn{HashQuery, "t"}, "GET /t=1 HTTP/1.1\r\nHost: h\r\n\r\n", balancer.NoKey},
		{HashOn{HashPath, ""}, "GET /img/1.png?v=2 HTTP/1.1\r\nHost: h\r\n\r\n", val("/img/1.png")},
		{HashOn{HashIP, ""}, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", balancer.HashIP(peer)},
	} {
		if got := key(tc.on, tc.req); got != tc.want {
			t.Errorf("%v on %q: key %x, want %x", tc.on, tc.req, got, tc.want)
		}
	}
}

// TestHashOnHeaderEndToEnd: through real sockets, a user's requests all
// reach one backend, users spread over the backends, and requests without
// the header are round-robined.
func TestHashOnHeaderEndToEnd(t *testing.T) {
	f := newStickyFixture(t, 3, balancer.Hash, nil)
	seen := map[string]bool{}
	for u := range 30 {
		user := "user-" + string(rune('A'+u))
		first, _ := f.get("", "X-User", user)
		for range 4 {
			if got, _ := f.get("", "X-User", user); got != first {
				t.Fatalf("%s went to %s, then %s", user, first, got)
			}
		}
		seen[first] = true
	}
	if len(seen) != 3 {
		t.Errorf("30 users reached %d of 3 backends", len(seen))
	}
	rr := map[string]int{}
	for range 9 {
		got, _ := f.get("")
		rr[got]++
	}
	for name, n := range rr {
		if n != 3 {
			t.Errorf("no key: %s got %d of 9 (round robin fallback)", name, n)
		}
	}
}
