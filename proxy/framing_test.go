package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// framingRig is a kelpie proxy, routed like `kelpie run` with one upstream
// and no routes (path prefix "/"), in front of a raw recording backend.
type framingRig struct {
	px   *testProxy
	be   *wireBackend
	pool *balancer.Pool
}

func startFramingRig(t *testing.T) *framingRig {
	t.Helper()
	be := startWire(t)
	pool := newPool(t, balancer.RoundRobin, be.addr)
	px := startProxy(t, Options{ReadTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second},
		Route{PathPrefix: "/", Upstream: &Upstream{Pool: pool}})
	return &framingRig{px: px, be: be, pool: pool}
}

// send writes request on a fresh connection and reads one response, with a
// deadline far below the proxy's read timeout: an answer that only comes
// when a timeout fires fails the test.
func (r *framingRig) send(t *testing.T, request string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", r.px.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to %q: %v", request, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// head returns the backend's raw request head lines (request line first).
func head(raw []byte) []string {
	h, _, _ := strings.Cut(string(raw), "\r\n\r\n")
	return strings.Split(h, "\r\n")
}

// TestHTTP10WithoutHostForwarded: HTTP/1.0 does not require Host. Such a
// request used to get 502 "backend connection failed" without a byte sent
// (fasthttp cannot write a request without Host), counted as a backend
// failure. It is now forwarded as HTTP/1.1 with the address the client
// connected to as Host, and the backend's failure count stays 0.
func TestHTTP10WithoutHostForwarded(t *testing.T) {
	r := startFramingRig(t)
	for i := range 3 { // more than one: the backend connection stays usable
		resp, body := r.send(t, "GET /old HTTP/1.0\r\nUser-Agent: probe/1\r\n\r\n")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q, want 200 ok", i, resp.StatusCode, body)
		}
	}
	lines := head(r.be.bytes())
	if lines[0] != "GET /old HTTP/1.1" {
		t.Errorf("request line upstream %q, want GET /old HTTP/1.1", lines[0])
	}
	for _, want := range []string{"Host: " + r.px.addr, "User-Agent: probe/1"} {
		if !slices.Contains(lines, want) {
			t.Errorf("backend head %q lacks %q", lines, want)
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "X-Forwarded-Host:") {
			t.Errorf("made-up %q", l)
		}
	}
	if b := r.pool.Lookup(r.be.addr); b.Failures() != 0 || b.Requests() != 3 {
		t.Errorf("backend failures %d requests %d, want 0 and 3", b.Failures(), b.Requests())
	}
	// With a Host, HTTP/1.0 keeps it, and still goes upstream as HTTP/1.1.
	before := len(r.be.bytes())
	if resp, _ := r.send(t, "GET /h HTTP/1.0\r\nHost: a.example\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("HTTP/1.0 with Host: %d", resp.StatusCode)
	}
	lines = head(r.be.bytes()[before:])
	if lines[0] != "GET /h HTTP/1.1" || !slices.Contains(lines, "Host: a.example") {
		t.Errorf("backend head %q", lines)
	}
}

// TestHTTPVersionsRefused: any version but 1.0 and 1.1 used to be forwarded
// as sent; now 505, and the backend gets nothing.
func TestHTTPVersionsRefused(t *testing.T) {
	r := startFramingRig(t)
	for _, v := range []string{"HTTP/1.2", "HTTP/2.0", "HTTP/5.6", "HTTP/9.9", "HTTP/0.9"} {
		t.Run(v, func(t *testing.T) {
			resp, _ := r.send(t, "GET / "+v+"\r\nHost: a\r\n\r\n")
			if resp.StatusCode != 505 || !resp.Close {
				t.Errorf("status %d close %v, want 505 and Connection: close", resp.StatusCode, resp.Close)
			}
		})
	}
	if n := r.be.size(); n != 0 {
		t.Errorf("backend received %d bytes", n)
	}
}

// TestRequestHeadersForwardedAsSent: every client header line reaches the
// backend byte for byte, and the only lines kelpie adds are its forwarding
// headers. A body without Content-Type used to arrive with Content-Type:
// application/octet-stream.
func TestRequestHeadersForwardedAsSent(t *testing.T) {
	r := startFramingRig(t)
	sent := []string{
		"Host: a.example:8080",
		"Content-Length: 5",
		"Accept: */*",
		"Cookie: a=1; b=2",
		"X-Odd-Value: a  b\tc, d;e=\"f\"",
		"X-Empty: ",
	}
	resp, _ := r.send(t, "POST /up?q=1 HTTP/1.1\r\n"+strings.Join(sent, "\r\n")+"\r\n\r\nhello")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct, ok := resp.Header["Content-Type"]; ok {
		t.Errorf("response Content-Type %q added (the backend sent none)", ct)
	}
	lines := head(r.be.bytes())
	if lines[0] != "POST /up?q=1 HTTP/1.1" {
		t.Errorf("request line %q", lines[0])
	}
	for _, want := range sent {
		if !slices.Contains(lines, want) {
			t.Errorf("backend head lacks %q: %q", want, lines)
		}
	}
	for _, l := range lines[1:] {
		name, _, _ := strings.Cut(l, ":")
		switch {
		case slices.Contains(sent, l):
		case slices.Contains([]string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id"}, name):
		default:
			t.Errorf("backend received a line the client did not send: %q", l)
		}
	}
	if body := r.be.body(0); string(body) != "hello" {
		t.Errorf("body %q", body)
	}
	// A chunked body without Content-Type: none added either.
	before := len(r.be.bytes())
	resp, _ = r.send(t, "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("chunked: status %d", resp.StatusCode)
	}
	for _, l := range head(r.be.bytes()[before:]) {
		if strings.HasPrefix(strings.ToLower(l), "content-type") || strings.HasPrefix(strings.ToLower(l), "user-agent") {
			t.Errorf("added %q", l)
		}
	}
}

// TestBareLFAnsweredAtOnce: a head with LF-only line endings used to get no
// answer until the read timeout (fasthttp waits for a CRLFCRLF); a bare LF
// after the request line used to be forwarded. Both get 400 at once
// (send's deadline is far below the proxy's 10s read timeout), and nothing
// reaches the backend, also when they follow a good request on a
// keep-alive connection.
func TestBareLFAnsweredAtOnce(t *testing.T) {
	r := startFramingRig(t)
	for _, tc := range []struct{ name, req string }{
		{"LF only", "GET / HTTP/1.1\nHost: a\n\n"},
		{"request line", "GET / HTTP/1.1\nHost: a\r\n\r\n"},
		{"before request line", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"LF only, POST", "POST / HTTP/1.1\nHost: a\nContent-Length: 2\n\nab"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := r.send(t, tc.req)
			if resp.StatusCode != 400 || !strings.Contains(body, "bare LF") || !resp.Close {
				t.Errorf("got %d %q close %v, want 400 naming the bare LF, with Connection: close", resp.StatusCode, body, resp.Close)
			}
		})
	}
	if n := r.be.size(); n != 0 {
		t.Fatalf("backend received %d bytes", n)
	}
	// After a good request with a body, on the same connection.
	c, err := net.Dial("tcp", r.px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	good := "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\na\n\nb"
	if _, err := io.WriteString(c, good+"GET /bad HTTP/1.1\nHost: a\n\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i, want := range []int{200, 400} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != want {
			t.Errorf("response %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
	if got := r.be.requests(); got != 1 || string(r.be.body(0)) != "a\n\nb" {
		t.Errorf("backend got %d requests (body %q), want only the good one", got, r.be.body(0))
	}
}

// TestOptionsAsteriskRouted: with one upstream and no routes (route "/"),
// OPTIONS * used to get 404 "no route"; it routes like "/" now and reaches
// the backend as sent.
func TestOptionsAsteriskRouted(t *testing.T) {
	r := startFramingRig(t)
	resp, body := r.send(t, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q, want the backend's 200", resp.StatusCode, body)
	}
	if lines := head(r.be.bytes()); lines[0] != "OPTIONS * HTTP/1.1" {
		t.Errorf("request line upstream %q", lines[0])
	}
}

// TestForbiddenTrailerNamed: a chunked trailer carrying a field fasthttp
// refuses there used to get 400 "request body could not be read"; the
// answer now names the field, and nothing reaches the backend.
func TestForbiddenTrailerNamed(t *testing.T) {
	r := startFramingRig(t)
	for _, field := range []string{"Content-Type", "Content-Length", "Host", "Transfer-Encoding"} {
		resp, body := r.send(t, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"+field+": x\r\n\r\n")
		if resp.StatusCode != 400 || !strings.Contains(body, "trailer field not allowed: "+field) {
			t.Errorf("%s: got %d %q", field, resp.StatusCode, body)
		}
	}
	if n := r.be.size(); n != 0 {
		t.Errorf("backend received %d bytes", n)
	}
	// An ordinary trailer field is forwarded.
	if resp, _ := r.send(t, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n"); resp.StatusCode != 200 {
		t.Errorf("ordinary trailer: %d", resp.StatusCode)
	}
	if !strings.Contains(string(r.be.bytes()), "\r\n0\r\nX-Checksum: 1\r\n\r\n") {
		t.Errorf("trailer not forwarded: %q", r.be.bytes())
	}
}

// TestUnsupportedTransferCoding: a coding kelpie does not implement used to
// get 400; 501 now (RFC 9112 section 6.1; nginx does the same). Broken
// chunked framing stays 400. The backend gets nothing either way.
func TestUnsupportedTransferCoding(t *testing.T) {
	r := startFramingRig(t)
	for _, tc := range []struct {
		te     string
		status int
	}{
		{"deflate, chunked", 501},
		{"gzip", 501},
		{"gzip, chunked", 501},
		{"identity", 501},
		{"x-custom, chunked", 501},
		{"chunked, gzip", 400},
		{"chunked, chunked", 400},
		{"chunked;x=1", 400},
		{", chunked", 400},
	} {
		resp, body := r.send(t, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "+tc.te+"\r\n\r\n0\r\n\r\n")
		if resp.StatusCode != tc.status || !resp.Close {
			t.Errorf("TE %q: %d %q close %v, want %d", tc.te, resp.StatusCode, body, resp.Close, tc.status)
		}
	}
	if n := r.be.size(); n != 0 {
		t.Errorf("backend received %d bytes", n)
	}
}

// TestPipelinedResponsesNotHeldBack: two complete pipelined requests are
// answered while a third request's body is still incomplete. The responses
// used to wait in fasthttp's write buffer until that body arrived.
func TestPipelinedResponsesNotHeldBack(t *testing.T) {
	r := startFramingRig(t)
	c, err := net.Dial("tcp", r.px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	pipeline := "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"
	if _, err := io.WriteString(c, pipeline); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d while request 3 is incomplete: %v", i+1, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	// The rest of the body completes the third request.
	if _, err := io.WriteString(c, "defghij"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("third response: %v %v", resp, err)
	}
	if got := r.be.body(2); string(got) != "abcdefghij" {
		t.Errorf("third body %q", got)
	}
}

// TestNoWriteTimeoutServes: with the write timeout disabled, responses are
// still written (the flush deadline kelpie sets per request must then be
// none, not one already past).
func TestNoWriteTimeoutServes(t *testing.T) {
	be := startWire(t)
	px := startProxy(t, Options{WriteTimeout: -1},
		Route{PathPrefix: "/", Upstream: &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}})
	r := &framingRig{px: px, be: be}
	for range 2 {
		if resp, body := r.send(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
}

// TestStreamErrorsStayWithTheirRequest: a bare LF or the end of the
// connection inside a pipelined request's chunked body refuses that request
// only; the complete request before it, in the same packet, is forwarded.
func TestStreamErrorsStayWithTheirRequest(t *testing.T) {
	const good = "POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	for _, tc := range []struct{ name, bad string }{
		{"bare LF ending the trailer section", "POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\n"},
		{"connection ends before the last chunk", "POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startFramingRig(t)
			c, err := net.Dial("tcp", r.px.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.WriteString(c, good+tc.bad); err != nil {
				t.Fatal(err)
			}
			_ = c.(*net.TCPConn).CloseWrite()
			br := bufio.NewReader(c)
			for i, want := range []int{200, 400} {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d: %v", i+1, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				if resp.StatusCode != want {
					t.Errorf("response %d: %d, want %d", i+1, resp.StatusCode, want)
				}
			}
			if n := r.be.requests(); n != 1 || string(r.be.body(0)) != "abc" {
				t.Errorf("backend parsed %d requests (first body %q), want only the first, whole", n, r.be.body(0))
			}
		})
	}
}

// TestHeaderNamesKeepTheirSpelling: header names reach the backend, and the
// backend's reach the client, as they were spelled (they used to arrive in
// canonical case: x-foo became X-Foo). kelpie's own handling still folds
// case: hop-by-hop headers and those named in Connection go in any
// spelling, a lowercase x-forwarded-for is extended into one
// X-Forwarded-For, a valid lowercase x-request-id is kept as the only one.
// kelpie adds no Server header, to a backend's response or to its own.
func TestHeaderNamesKeepTheirSpelling(t *testing.T) {
	r := startFramingRig(t)
	resp, _ := r.send(t, "GET /n HTTP/1.1\r\nhost: a\r\nx-foo: A\r\nX-BAR: b\r\nconnection: x-HOP, keep-alive\r\n"+
		"keep-alive: 5\r\nX-Hop: secret\r\nte: trailers\r\nx-forwarded-for: 10.0.0.1\r\nx-request-id: abc-123\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	lines := head(r.be.bytes())
	for _, want := range []string{"x-foo: A", "X-BAR: b", "x-request-id: abc-123", "X-Forwarded-For: 10.0.0.1, 127.0.0.1"} {
		if !slices.Contains(lines, want) {
			t.Errorf("backend head lacks %q: %q", want, lines)
		}
	}
	count := map[string]int{}
	for _, l := range lines[1:] {
		name, _, _ := strings.Cut(l, ":")
		count[strings.ToLower(name)]++
	}
	for _, gone := range []string{"connection", "keep-alive", "x-hop", "te"} {
		if count[gone] != 0 {
			t.Errorf("%s forwarded: %q", gone, lines)
		}
	}
	if count["x-forwarded-for"] != 1 || count["x-request-id"] != 1 {
		t.Errorf("want one X-Forwarded-For and one X-Request-Id: %q", lines)
	}
	if _, ok := resp.Header["Server"]; ok {
		t.Errorf("Server header added to the backend's response: %q", resp.Header["Server"])
	}
	if resp, _ := r.send(t, "GET /x HTTP/1.1\nHost: a\n\n"); resp.StatusCode != 400 || resp.Header.Get("Server") != "" {
		t.Errorf("kelpie's own answer: %d, Server %q; want 400 and none", resp.StatusCode, resp.Header.Get("Server"))
	}

	be := startRawBackend(t, func(rb *rawBackend, c net.Conn, br *bufio.Reader) {
		for rb.readHead(br) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-resp: V\r\nconnection: X-GONE\r\n"+
				"x-gone: 1\r\nkeep-alive: timeout=5\r\n\r\nok")
		}
	})
	px := proxyTo(t, &Upstream{Pool: newPool(t, balancer.RoundRobin, be.addr)}, Options{})
	got := raw(t, px.addr, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	rh, _, _ := strings.Cut(got, "\r\n\r\n")
	rlines := strings.Split(rh, "\r\n")
	if !slices.Contains(rlines, "x-resp: V") {
		t.Errorf("client did not get x-resp as sent: %q", rlines)
	}
	for _, l := range rlines[1:] {
		name, _, _ := strings.Cut(strings.ToLower(l), ":")
		if name == "x-gone" || name == "keep-alive" || name == "server" {
			t.Errorf("client got %q", l)
		}
	}
}

// TestFencingHeaderForgedInAnySpelling: a client's copy of the fencing
// header is removed however it spells the name (names are not normalised),
// and the backend sees kelpie's token only.
func TestFencingHeaderForgedInAnySpelling(t *testing.T) {
	be := startWire(t)
	pool := newPool(t, balancer.RoundRobin, be.addr)
	px := startProxy(t, Options{FencingHeader: "X-Fence", FencingToken: func() uint64 { return 7 }},
		Route{PathPrefix: "/", Upstream: &Upstream{Pool: pool}})
	r := &framingRig{px: px, be: be, pool: pool}
	if resp, _ := r.send(t, "GET / HTTP/1.1\r\nHost: a\r\nx-fence: 999\r\nX-FENCE: 998\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var fences []string
	for _, l := range head(be.bytes())[1:] {
		if name, _, _ := strings.Cut(l, ":"); strings.EqualFold(name, "X-Fence") {
			fences = append(fences, l)
		}
	}
	if !slices.Equal(fences, []string{"X-Fence: 7"}) {
		t.Errorf("backend got fencing lines %q, want only kelpie's", fences)
	}
}
