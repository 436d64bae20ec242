package proxy

import (
	"bufio"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// linesNamed returns the header lines of a raw head (request or status line
// first) whose name is one of names, in the order they appear.
func linesNamed(lines []string, names ...string) []string {
	var out []string
	for _, l := range lines[1:] {
		name, _, _ := strings.Cut(l, ":")
		if slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, name) }) {
			out = append(out, l)
		}
	}
	return out
}

// TestDeletionKeepsRequestHeaderOrder: deleting hop-by-hop headers (a
// browser's Connection: keep-alive, Keep-Alive, one named in Connection)
// used to move the last header line into the deleted one's slot, so lines
// of one name could swap (RFC 9110 section 5.3). The raw backend must see
// the remaining lines in the client's order, same-name lines included.
func TestDeletionKeepsRequestHeaderOrder(t *testing.T) {
	r := startFramingRig(t)
	req := "GET / HTTP/1.1\r\nHost: a\r\n" +
		"Connection: keep-alive, X-Hop\r\n" +
		"X-Forwarded-For: 192.0.2.1\r\n" +
		"Accept: text/html\r\n" +
		"X-Hop: 1\r\n" +
		"X-Tag: one\r\n" +
		"Cookie: a=1\r\n" +
		"X-Tag: two\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Accept: */*\r\n" +
		"Cookie: b=2\r\n" +
		"X-Tag: three\r\n" +
		"X-Forwarded-For: 192.0.2.2\r\n" +
		"Z-Last: z\r\n\r\n"
	if resp, _ := r.send(t, req); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := head(r.be.bytes())
	want := []string{"Accept: text/html", "X-Tag: one", "Cookie: a=1", "X-Tag: two", "Accept: */*",
		"Cookie: b=2", "X-Tag: three", "Z-Last: z"}
	if lines := linesNamed(got, "Accept", "X-Tag", "Cookie", "Z-Last"); !slices.Equal(lines, want) {
		t.Errorf("backend got\n%q\nwant the client's order\n%q", lines, want)
	}
	if lines := linesNamed(got, "Connection", "Keep-Alive", "X-Hop"); len(lines) != 0 {
		t.Errorf("hop-by-hop lines reached the backend: %q", lines)
	}
	if lines := linesNamed(got, "X-Forwarded-For"); !slices.Equal(lines, []string{"X-Forwarded-For: 192.0.2.1, 192.0.2.2, 127.0.0.1"}) {
		t.Errorf("X-Forwarded-For lines %q", lines)
	}
}

// TestDeletionKeepsResponseHeaderOrder is the response side: a raw backend's
// Vary, Link and Set-Cookie lines around hop-by-hop ones reach a raw client
// in the backend's order.
func TestDeletionKeepsResponseHeaderOrder(t *testing.T) {
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" +
		"Vary: A\r\n" +
		"Connection: keep-alive, X-Private\r\n" +
		"Set-Cookie: s=1\r\n" +
		"Link: <a>\r\n" +
		"X-Private: p\r\n" +
		"Link: <b>\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Set-Cookie: s=2\r\n" +
		"Vary: B\r\n" +
		"Link: <c>\r\n" +
		"Z-Last: z\r\n\r\nok"
	be := startRawBackend(t, func(rb *rawBackend, c net.Conn, br *bufio.Reader) {
		for rb.readHead(br) {
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	})
	pool := newPool(t, balancer.RoundRobin, be.addr)
	px := startProxy(t, Options{}, Route{PathPrefix: "/", Upstream: &Upstream{Pool: pool}})

	c, err := net.Dial("tcp", px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var got []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the response head: %v (so far %q)", err, got)
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		got = append(got, l)
	}
	want := []string{"Vary: A", "Link: <a>", "Link: <b>", "Vary: B", "Link: <c>", "Z-Last: z"}
	if lines := linesNamed(got, "Vary", "Link", "Z-Last"); !slices.Equal(lines, want) {
		t.Errorf("client got\n%q\nwant the backend's order\n%q", lines, want)
	}
	if lines := linesNamed(got, "Set-Cookie"); !slices.Equal(lines, []string{"Set-Cookie: s=1", "Set-Cookie: s=2"}) {
		t.Errorf("Set-Cookie lines %q", lines)
	}
	if lines := linesNamed(got, "Keep-Alive", "X-Private"); len(lines) != 0 {
		t.Errorf("hop-by-hop lines reached the client: %q", lines)
	}
}
