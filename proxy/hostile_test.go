package proxy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// TestHostileRequestsRejected sends each ambiguous or malformed request on a
// raw TCP connection and checks the answer (status, Connection: close, the
// connection closed) and that the backend received not one byte.
func TestHostileRequestsRejected(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
	pool := newPool(t, balancer.RoundRobin, be.addr)
	px := proxyTo(t, &Upstream{Pool: pool}, Options{MaxHeaderCount: 20})
	capped := proxyTo(t, &Upstream{Pool: pool}, Options{MaxBodyBytes: 1000})

	post := "POST / HTTP/1.1\r\nHost: a\r\n"
	cases := []struct {
		name, req string
		status    int
		addr      string
	}{
		{"CL+TE", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ""},
		{"TE+CL", post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, ""},
		{"duplicate CL equal", post + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, ""},
		{"duplicate CL differ", post + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, ""},
		{"CL plus sign", post + "Content-Length: +3\r\n\r\nabc", 400, ""},
		{"CL comma list", post + "Content-Length: 3, 3\r\n\r\nabc", 400, ""},
		{"CL negative", post + "Content-Length: -1\r\n\r\n", 400, ""},
		{"CL overflow", post + "Content-Length: 99999999999999999999999\r\n\r\n", 400, ""},
		{"TE identity", post + "Transfer-Encoding: identity\r\n\r\n", 501, ""},
		{"TE gzip", post + "Transfer-Encoding: gzip\r\n\r\n", 501, ""},
		{"TE chunked, gzip", post + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400, ""},
		{"TE gzip, chunked", post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, ""},
		{"TE twice", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ""},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ""},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400, ""},
		{"obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n", 400, ""},
		{"obs-fold on CL", post + "Content-Length:\r\n 3\r\n\r\nabc", 400, ""},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n", 400, ""},
		{"bare LF line", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n", 400, ""},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400, ""},
		{"NUL in name", "GET / HTTP/1.1\r\nHost: a\r\nX-\x00A: b\r\n\r\n", 400, ""},
		{"CTL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n", 400, ""},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400, ""},
		{"space before colon Host", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, ""},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, ""},
		{"no Host in 1.1", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400, ""},
		{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, ""},
		{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, ""},
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, ""},
		{"invalid chunk size", post + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, ""},
		{"chunk size overflow", post + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400, ""},
		{"chunk size bare LF", post + "Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400, ""},
		{"absolute-form target", "GET http://evil.example/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, ""},
		{"malformed escape in target", "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400, ""},
		{"lone percent in target", "GET /% HTTP/1.1\r\nHost: a\r\n\r\n", 400, ""},
		{"asterisk for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, ""},
		{"CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405, ""},
		{"URI too long", "GET /" + strings.Repeat("a", DefaultMaxURIBytes+10) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414, ""},
		{"headers too large", "GET / HTTP/1.1\r\nHost: a\r\nX-A: " + strings.Repeat("a", DefaultMaxHeaderBytes) + "\r\n\r\n", 431, ""},
		{"header block past buffer", "GET / HTTP/1.1\r\nHost: a\r\nX-A: " + strings.Repeat("a", 3*DefaultMaxHeaderBytes) + "\r\n\r\n", 431, ""},
		{"too many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + manyHeaders(21) + "\r\n", 431, ""},
		{"body over cap (CL)", post + "Content-Length: 2000\r\n\r\n" + strings.Repeat("x", 2000), 413, "capped"},
		{"body over cap (chunked)", post + "Transfer-Encoding: chunked\r\n\r\n7d0\r\n" + strings.Repeat("x", 2000) + "\r\n0\r\n\r\n", 413, "capped"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := px.addr
			if tc.addr == "capped" {
				addr = capped.addr
			}
			before := be.bytes.Load()
			out := raw(t, addr, tc.req) // returns once the proxy closes
			if want := fmt.Sprintf("HTTP/1.1 %d ", tc.status); !strings.HasPrefix(out, want) {
				t.Fatalf("got %q, want %s", statusOf(out), want)
			}
			if !strings.Contains(strings.ToLower(out), "\r\nconnection: close\r\n") {
				t.Errorf("no Connection: close in %q", out)
			}
			if n := be.bytes.Load() - before; n != 0 {
				t.Errorf("backend received %d bytes", n)
			}
		})
	}
	// The same proxy still serves good requests.
	if out := raw(t, px.addr, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("good request after hostile ones: %q", statusOf(out))
	}
}

func manyHeaders(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-H%d: v\r\n", i)
	}
	return b.String()
}
