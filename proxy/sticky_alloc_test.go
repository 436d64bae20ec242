//go:build !race

package proxy

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// TestStickyAndHashKeyAllocs: finding a request's hash key, reading its
// sticky cookie and setting a new one allocate nothing once warm (the
// sticky table is built once per snapshot, not per request).
func TestStickyAndHashKeyAllocs(t *testing.T) {
	p, err := New(Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := balancer.NewPool(balancer.Options{Name: "web", Algorithm: balancer.Hash})
	pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2"}, {Address: "127.0.0.1:3"}})
	defer pool.Close()
	up := &Upstream{Pool: pool, Sticky: &Sticky{SameSite: "lax", HTTPOnly: true}}
	snap := pool.Snapshot()
	tbl := up.Sticky.tableFor(snap, "web", p.stickyKey(up.Sticky))
	genuine := tbl.values[1]

	var ctx fasthttp.RequestCtx
	req := "GET /img/a.png?tenant=acme HTTP/1.1\r\nHost: h\r\nX-User: alice\r\nCookie: sid=s1; kelpie_sticky=" + genuine + "\r\n\r\n"
	if err := ctx.Request.Header.Read(bufio.NewReader(strings.NewReader(req))); err != nil {
		t.Fatal(err)
	}
	peer := netip.MustParseAddr("192.0.2.1")
	for _, on := range []HashOn{{HashIP, ""}, {HashHeader, "X-User"}, {HashCookie, "sid"}, {HashQuery, "tenant"}, {HashPath, ""}} {
		up.HashOn = on
		if n := testing.AllocsPerRun(500, func() {
			if p.clientKey(up, &ctx.Request.Header, peer) == balancer.NoKey {
				panic("no key")
			}
		}); n != 0 {
			t.Errorf("hash_on %v: %v allocs per key", on, n)
		}
	}
	if n := testing.AllocsPerRun(500, func() {
		pin := p.pinned(&ctx, up)
		if pin.b != snap.Members[1] {
			panic("not pinned")
		}
		p.stickyReply(&ctx, up, snap.Members[2], &pin) // re-pinned elsewhere: a new cookie
	}); n != 0 {
		t.Errorf("sticky lookup and rewrite: %v allocs per request", n)
	}
}
