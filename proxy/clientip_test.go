package proxy

import (
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusting, err := New(Options{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"),
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := New(Options{}, nil)
	peerTrusted := netip.MustParseAddr("10.1.1.1")
	peerOther := netip.MustParseAddr("203.0.113.9")
	cases := []struct {
		name string
		p    *Proxy
		peer netip.Addr
		raw  string
		want string
	}{
		{"no trust: peer", plain, peerTrusted, "X-Forwarded-For: 1.2.3.4\r\n", "10.1.1.1"},
		{"untrusted peer: peer", trusting, peerOther, "X-Forwarded-For: 1.2.3.4\r\n", "203.0.113.9"},
		{"rightmost untrusted", trusting, peerTrusted, "X-Forwarded-For: 6.6.6.6, 1.2.3.4, 10.9.9.9\r\n", "1.2.3.4"},
		{"spoofed left ignored", trusting, peerTrusted, "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 1.2.3.4\r\n", "1.2.3.4"},
		{"all trusted: leftmost", trusting, peerTrusted, "X-Forwarded-For: 10.2.2.2, 10.3.3.3\r\n", "10.2.2.2"},
		{"port and brackets", trusting, peerTrusted, "X-Forwarded-For: [2001:db8::1]:443\r\n", "2001:db8::1"},
		{"ipv4 with port", trusting, peerTrusted, "X-Forwarded-For: 1.2.3.4:80\r\n", "1.2.3.4"},
		{"garbage stops the walk", trusting, peerTrusted, "X-Forwarded-For: 1.2.3.4, junk, 10.2.2.2\r\n", "10.2.2.2"},
		{"zone refused", trusting, peerTrusted, "X-Forwarded-For: fe80::1%eth0\r\n", "10.1.1.1"},
		{"no header", trusting, peerTrusted, "", "10.1.1.1"},
		{"mapped v4", trusting, peerTrusted, "X-Forwarded-For: ::ffff:1.2.3.4\r\n", "1.2.3.4"},
		{"case-insensitive name", trusting, peerTrusted, "x-forwarded-for: 1.2.3.4\r\n", "1.2.3.4"},
	}
	for _, tc := range cases {
		got := tc.p.clientIP([]byte(tc.raw+"\r\n"), tc.peer)
		if got.String() != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
	raw := []byte("X-Forwarded-For: 6.6.6.6, 1.2.3.4, 10.9.9.9\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() { trusting.clientIP(raw, peerTrusted) }); n != 0 {
		t.Errorf("clientIP allocates %v times", n)
	}
}
