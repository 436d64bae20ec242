package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
)

// strictParse is the independent parser the differential tests compare
// kelpie with: Go's net/http.ReadRequest and its body reader, plus the
// RFC 9112 rules net/http leaves to its server or takes leniently, applied
// the strict way (strictHead): every head line ends in CRLF (section 2.2),
// no obs-fold (5.2), HTTP/1.1 has one Host (3.2), the version is 1.0 or 1.1
// (2.3), not both Content-Length and Transfer-Encoding (6.1, the MAY
// reject), no Transfer-Encoding in HTTP/1.0 (6.1); and, as section 2.2
// asks of a server, empty lines before a request line are skipped (net/http
// refuses them). It parses the requests in in one after the other and returns those it accepts, each with its body,
// up to the first it refuses.
func strictParse(in []byte) (reqs []*http.Request, bodies [][]byte, err error) {
	br := bufio.NewReaderSize(bytes.NewReader(in), 1<<20)
	for {
		_, _ = br.Peek(1) // fill the buffer: all of in fits
		rest, _ := br.Peek(br.Buffered())
		if len(rest) == 0 || len(reqs) > 0 &&
			bytes.Count(rest, []byte("\r\n"))*2 == len(rest) {
			return reqs, bodies, nil // the end, or only empty lines after the last request
		}
		// RFC 9112 section 2.2: a server SHOULD ignore at least one empty
		// line (CRLF) before the request-line; net/http does not.
		for len(rest) >= 2 && rest[0] == '\r' && rest[1] == '\n' {
			_, _ = br.Discard(2)
			rest = rest[2:]
		}
		if err := strictHead(rest); err != nil {
			return reqs, bodies, err
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return reqs, bodies, err
		}
		if req.ProtoAtLeast(1, 1) && req.Host == "" {
			// net/http moves Host out of Header and refuses two.
			return reqs, bodies, fmt.Errorf("HTTP/1.1 request without Host")
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return reqs, bodies, fmt.Errorf("body: %w", err)
		}
		reqs, bodies = append(reqs, req), append(bodies, body)
	}
}

// strictHead checks the raw head at the start of b (up to its first empty
// line) for what net/http accepts but RFC 9112 lets a server refuse.
func strictHead(b []byte) error {
	var cl, te int
	http10 := false
	for i := 0; len(b) > 0; i++ {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return nil // incomplete: net/http reports it
		}
		line := b[:nl]
		b = b[nl+1:]
		if !bytes.HasSuffix(line, []byte("\r")) {
			return fmt.Errorf("line %d ends in a bare LF", i)
		}
		line = line[:len(line)-1]
		if bytes.IndexByte(line, '\r') >= 0 {
			return fmt.Errorf("bare CR in line %d", i)
		}
		if len(line) == 0 {
			if i == 0 {
				return nil // an empty line before the request line: net/http refuses it
			}
			break
		}
		if i == 0 {
			if sp := bytes.LastIndexByte(line, ' '); sp >= 0 {
				v := string(line[sp+1:])
				if v != "HTTP/1.1" && v != "HTTP/1.0" {
					return fmt.Errorf("version %q", v)
				}
				http10 = v == "HTTP/1.0"
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return fmt.Errorf("obs-fold in line %d", i)
		}
		name, _, _ := bytes.Cut(line, []byte(":"))
		switch strings.ToLower(string(name)) {
		case "content-length":
			cl++
		case "transfer-encoding":
			te++
		}
	}
	switch {
	case cl > 0 && te > 0:
		return fmt.Errorf("Content-Length with Transfer-Encoding")
	case te > 0 && http10:
		return fmt.Errorf("Transfer-Encoding in HTTP/1.0")
	}
	return nil
}

// diffRig is a kelpie proxy in front of a wireBackend, with a count of the
// bytes kelpie wrote to backend connections (counted on kelpie's side, so
// it is final by the time kelpie has answered the client).
type diffRig struct {
	px    *testProxy
	be    *wireBackend
	sent  atomic.Int64
	conns atomic.Uint32 // connections opened, to spread their source addresses
}

func startDiffRig(t testing.TB) *diffRig {
	t.Helper()
	r := &diffRig{be: startWire(t)}
	r.be.noRaw = true // the comparison uses what the backend parsed
	up := &Upstream{
		Pool: newPool(t, balancer.RoundRobin, r.be.addr),
		Dial: func(addr string, timeout time.Duration) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", addr, timeout)
			if err != nil {
				return nil, err
			}
			return &sentConn{Conn: c, n: &r.sent}, nil
		},
	}
	r.px = startProxy(t, Options{ReadTimeout: 5 * time.Second, MaxBodyBytes: 1 << 20},
		Route{PathPrefix: "/", Upstream: up})
	return r
}

type sentConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *sentConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// exchange sends in on a fresh connection, half-closes it, and reads the
// answer until kelpie closes. It returns the answer, the bytes kelpie sent
// upstream meanwhile, and the requests the backend parsed with their bodies.
func (r *diffRig) exchange(t testing.TB, in []byte) (string, int64, []*http.Request, [][]byte) {
	t.Helper()
	sent0 := r.sent.Load()
	r.be.mu.Lock()
	req0 := len(r.be.reqs)
	r.be.mu.Unlock()
	// The client closes its side first, so each of its sockets ends in
	// TIME_WAIT; a fuzzing run opens tens of thousands of connections and
	// would run out of ports on one source address. Spreading them over
	// 127.0.0.2-127.0.0.251 gives each address its own ports.
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+r.conns.Add(1)%250))}
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: src}
	c, err := d.Dial("tcp", r.px.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(in); err != nil && !isReset(err) {
		t.Fatalf("write: %v", err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("read answer to %q: %v (got %q)", in, err, out)
	}
	r.be.mu.Lock()
	reqs := append([]*http.Request(nil), r.be.reqs[req0:]...)
	bodies := append([][]byte(nil), r.be.bodys[req0:]...)
	r.be.mu.Unlock()
	return string(out), r.sent.Load() - sent0, reqs, bodies
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// diffCase checks one input: whatever kelpie forwards, the strict parser
// must accept, request for request, with the same method, target and body.
// lenient names inputs the strict parser refuses that kelpie may forward,
// with the reason.
func diffCase(t *testing.T, r *diffRig, in []byte) {
	t.Helper()
	want, wantBodies, perr := strictParse(in)
	out, sent, got, gotBodies := r.exchange(t, in)
	if reason, ok := lenient[string(in)]; ok {
		t.Logf("listed as lenient (%s)", reason)
		return
	}
	if len(got) > len(want) {
		t.Fatalf("kelpie forwarded %d request(s), the strict parser accepts %d (%v)\ninput: %q\nanswer: %q",
			len(got), len(want), perr, in, out)
	}
	for i := range got {
		if got[i].Method != want[i].Method || got[i].RequestURI != want[i].RequestURI ||
			!bytes.Equal(gotBodies[i], wantBodies[i]) {
			t.Fatalf("request %d differs: kelpie forwarded %s %s body %q, the strict parser read %s %s body %q\ninput: %q",
				i, got[i].Method, got[i].RequestURI, gotBodies[i], want[i].Method, want[i].RequestURI, wantBodies[i], in)
		}
	}
	// A refused request small enough for kelpie's read-ahead sends nothing
	// upstream; a larger one may have started streaming, and is then cut
	// off (the backend sees an incomplete request, as checked above).
	if len(got) == 0 && sent != 0 && len(in) <= 4<<10 {
		t.Fatalf("kelpie sent %d bytes upstream but the backend parsed no request\ninput: %q\nanswer: %q", sent, in, out)
	}
}

// lenient lists inputs the strict parser refuses and kelpie forwards, with
// the reason that is acceptable. Empty: kelpie is at least as strict on
// every case in the corpus.
var lenient = map[string]string{}

// TestDifferentialFraming runs every corpus request through kelpie (a real
// proxy in front of a raw recording backend) and through Go's strict
// net/http parser, and fails when kelpie forwards anything the strict parser
// refuses, or forwards something other than what it reads.
func TestDifferentialFraming(t *testing.T) {
	r := startDiffRig(t)
	for _, c := range framingCorpus() {
		t.Run(c.name, func(t *testing.T) { diffCase(t, r, []byte(c.req)) })
	}
}

// FuzzDifferentialFraming is TestDifferentialFraming's comparison on
// arbitrary input, seeded with its corpus. Inputs over 2 KiB are left to the
// corpus (its bodies past kelpie's 4 KiB read-ahead run in
// TestDifferentialFraming and as seeds here): every execution is a real
// connection, and Go's minimisation of a large new input then runs past its
// 60s budget, which the fuzzer reports as a hung worker.
func FuzzDifferentialFraming(f *testing.F) {
	seed := map[string]bool{}
	for _, c := range framingCorpus() {
		f.Add([]byte(c.req))
		seed[c.req] = true
	}
	r := startDiffRig(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 2<<10 && !seed[string(in)] {
			return
		}
		diffCase(t, r, in)
	})
}

type corpusCase struct{ name, req string }

// framingCorpus is the differential tests' corpus: request smuggling
// classics and parser edge cases, from the HAProxy and nginx test suites,
// smuggler.py's Transfer-Encoding mutations and the HTTP Garden's classes
// (research/reliability.md).
func framingCorpus() []corpusCase {
	const get = "GET / HTTP/1.1\r\nHost: a\r\n"
	const post = "POST /p HTTP/1.1\r\nHost: a\r\n"
	cs := []corpusCase{
		{"plain GET", get + "\r\n"},
		{"POST CL", post + "Content-Length: 3\r\n\r\nabc"},
		{"POST chunked", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"chunked with extension", post + "Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n"},
		{"chunked with quoted extension", post + "Transfer-Encoding: chunked\r\n\r\n3;ext=\"a b\"\r\nabc\r\n0\r\n\r\n"},
		{"chunked with trailer", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"},
		{"pipelined two GETs", get + "\r\n" + get + "\r\n"},
		{"pipelined POST then GET", post + "Content-Length: 3\r\n\r\nabc" + get + "\r\n"},
		{"HTTP/1.0 with Host", "GET / HTTP/1.0\r\nHost: a\r\n\r\n"},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n"},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"leading CRLF", "\r\n" + get + "\r\n"},

		// Content-Length and Transfer-Encoding together or repeated.
		{"CL+TE", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"TE+CL", post + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"},
		{"CL CL equal", post + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"},
		{"CL CL differ", post + "Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"},
		{"CL list", post + "Content-Length: 3, 3\r\n\r\nabc"},
		{"CL plus", post + "Content-Length: +3\r\n\r\nabc"},
		{"CL minus", post + "Content-Length: -3\r\n\r\nabc"},
		{"CL space inside", post + "Content-Length: 1 2\r\n\r\nabc"},
		{"CL hex", post + "Content-Length: 0x3\r\n\r\nabc"},
		{"CL leading zeros", post + "Content-Length: 003\r\n\r\nabc"},
		{"CL empty", post + "Content-Length: \r\n\r\n"},
		{"CL overflow", post + "Content-Length: 99999999999999999999\r\n\r\n"},
		{"CL 19 digits", post + "Content-Length: 1000000000000000000\r\n\r\n"},
		{"CL trailing tab", post + "Content-Length: 3\t\r\n\r\nabc"},
		{"CL space before colon", post + "Content-Length : 3\r\n\r\nabc"},
		{"CL obs-fold", post + "Content-Length:\r\n 3\r\n\r\nabc"},
		{"CL body short", post + "Content-Length: 10\r\n\r\nabc"},
		{"chunked body missing", post + "Transfer-Encoding: chunked\r\n\r\n"},
		{"chunked body cut at chunk boundary", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"},
		{"chunked body cut in data", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nab"},
		{"chunked body cut in trailer", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n"},
		{"large chunked body cut at chunk boundary", post + "Transfer-Encoding: chunked\r\n\r\n1388\r\n" + strings.Repeat("x", 5000) + "\r\n"},
		{"large chunked body with bad chunk end", post + "Transfer-Encoding: chunked\r\n\r\n1388\r\n" + strings.Repeat("x", 5000) + "XX3\r\nabc\r\n0\r\n\r\n"},
		{"large chunked body cut in trailer", post + "Transfer-Encoding: chunked\r\n\r\n1388\r\n" + strings.Repeat("x", 5000) + "\r\n0\r\n"},
		{"large chunked body, bad chunk end after the read-ahead", post + "Transfer-Encoding: chunked\r\n\r\n1388\r\n" + strings.Repeat("x", 4999) + "XX3\r\nabc\r\n0\r\n\r\n"},
		{"large CL body short", post + "Content-Length: 6000\r\n\r\n" + strings.Repeat("x", 5000)},
		{"TE twice", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"TE chunked, chunked", post + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"},
		{"TE identity", post + "Transfer-Encoding: identity\r\n\r\n"},
		{"TE identity, chunked", post + "Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n"},
		{"TE gzip", post + "Transfer-Encoding: gzip\r\n\r\n"},
		{"TE gzip, chunked", post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"TE chunked, gzip", post + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"},
		{"TE deflate, chunked", post + "Transfer-Encoding: deflate, chunked\r\n\r\n0\r\n\r\n"},
		{"TE xchunked", post + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"},
		{"TE chunkedx", post + "Transfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n"},
		{"TE chunked;x=1", post + "Transfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n"},
		{"TE CHUNKED", post + "Transfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n"},
		{"TE leading space", post + "Transfer-Encoding:  chunked\r\n\r\n0\r\n\r\n"},
		{"TE tab", post + "Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n"},
		{"TE trailing comma", post + "Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n"},
		{"TE empty element", post + "Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n"},
		{"TE empty", post + "Transfer-Encoding: \r\n\r\n"},
		{"TE obs-fold", post + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"},
		{"TE space before colon", post + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"},
		{"TE quoted", post + "Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"TE on GET", get + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},

		// Chunk framing.
		{"chunk size invalid", post + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"},
		{"chunk size overflow", post + "Transfer-Encoding: chunked\r\n\r\n1000000000000000000000003\r\nabc\r\n0\r\n\r\n"},
		{"chunk size 16 digits", post + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc\r\n0\r\n\r\n"},
		{"chunk size negative", post + "Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n"},
		{"chunk size plus", post + "Transfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n"},
		{"chunk size 0x", post + "Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n"},
		{"chunk size leading space", post + "Transfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n"},
		{"chunk size trailing space", post + "Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n"},
		{"chunk size empty", post + "Transfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n"},
		{"chunk size bare LF", post + "Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"},
		{"chunk data too long", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n"},
		{"chunk data too short", post + "Transfer-Encoding: chunked\r\n\r\n5\r\nabc\r\n0\r\n\r\n"},
		{"chunk data bare LF end", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n"},
		{"chunk extension bare LF", post + "Transfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n"},
		{"chunk extension bare CR", post + "Transfer-Encoding: chunked\r\n\r\n3;a\rb\r\nabc\r\n0\r\n\r\n"},
		{"chunk extension NUL", post + "Transfer-Encoding: chunked\r\n\r\n3;a\x00\r\nabc\r\n0\r\n\r\n"},
		{"last chunk missing CRLF", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"},
		{"last chunk 000", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n000\r\n\r\n"},
		{"trailer Content-Length", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n"},
		{"trailer Content-Type", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Type: x\r\n\r\n"},
		{"trailer Host", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nHost: b\r\n\r\n"},
		{"trailer obs-fold", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"},
		{"trailer section bare LF", post + "Transfer-Encoding: chunked\r\n\r\n0\r\n\n"},
		{"large trailer section bare LF", post + "Transfer-Encoding: chunked\r\n\r\n1388\r\n" + strings.Repeat("x", 5000) + "\r\n0\r\n\n"},
		{"trailer bare LF", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\n\r\n"},
		{"trailer bad name", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX T: 1\r\n\r\n"},

		// Line endings and field syntax.
		{"all bare LF", "GET / HTTP/1.1\nHost: a\n\n"},
		{"request line bare LF", "GET / HTTP/1.1\nHost: a\r\n\r\n"},
		{"header bare LF", "GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n"},
		{"final bare LF", "GET / HTTP/1.1\r\nHost: a\r\n\n"},
		{"leading bare LF", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"bare CR in value", get + "X: 1\rY: 2\r\n\r\n"},
		{"bare CR request line", "GET / HTTP/1.1\rHost: a\r\n\r\n"},
		{"CR CR LF", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n"},
		{"obs-fold", get + "X: 1\r\n 2\r\n\r\n"},
		{"obs-fold tab", get + "X: 1\r\n\t2\r\n\r\n"},
		{"first header folded", "GET / HTTP/1.1\r\n Host: a\r\n\r\n"},
		{"space before colon", get + "X : 1\r\n\r\n"},
		{"tab before colon", get + "X\t: 1\r\n\r\n"},
		{"empty name", get + ": 1\r\n\r\n"},
		{"no colon", get + "X 1\r\n\r\n"},
		{"name with slash", get + "X/Y: 1\r\n\r\n"},
		{"name with quote", get + "X\"Y: 1\r\n\r\n"},
		{"name with brace", get + "X{Y}: 1\r\n\r\n"},
		{"name with high byte", get + "X\xffY: 1\r\n\r\n"},
		{"NUL in name", get + "X\x00: 1\r\n\r\n"},
		{"NUL in value", get + "X: a\x00b\r\n\r\n"},
		{"DEL in value", get + "X: a\x7fb\r\n\r\n"},
		{"VT in value", get + "X: a\x0bb\r\n\r\n"},
		{"FF in value", get + "X: a\x0cb\r\n\r\n"},
		{"high byte in value", get + "X: caf\xc3\xa9\r\n\r\n"},
		{"tab in value", get + "X: a\tb\r\n\r\n"},
		{"underscore name", get + "X_Y: 1\r\n\r\n"},

		// Host.
		{"no Host", "GET / HTTP/1.1\r\n\r\n"},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
		{"two Hosts equal", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"},
		{"empty Host", "GET / HTTP/1.1\r\nHost: \r\n\r\n"},
		{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"},
		{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"},
		{"Host with at", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"},
		{"Host with port", "GET / HTTP/1.1\r\nHost: a:80\r\n\r\n"},
		{"Host IPv6", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"},
		{"Host list", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"},
		{"Host mismatch absolute-form", "GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"Host folded", "GET / HTTP/1.1\r\nHost:\r\n a\r\n\r\n"},

		// Request line.
		{"absolute-form", "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"authority-form GET", "GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"},
		{"asterisk GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"empty target", "GET  HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n"},
		{"tab separator", "GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n"},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"lone percent in target", "GET /% HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"short escape in target", "GET /a%1 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"bad escape in query", "GET /a?b=%zz HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"good escapes in target", "GET /a%20b?c=%2F HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"fragment in target", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"NUL in target", "GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"DEL in target", "GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"high byte in target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"HTTP/0.9", "GET /\r\n\r\n"},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n"},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n"},
		{"HTTP/5.6", "GET / HTTP/5.6\r\nHost: a\r\n\r\n"},
		{"HTTP/9.9", "GET / HTTP/9.9\r\nHost: a\r\n\r\n"},
		{"HTTP/0.9 token", "GET / HTTP/0.9\r\nHost: a\r\n\r\n"},
		{"HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n"},
		{"HTTP/01.1", "GET / HTTP/01.1\r\nHost: a\r\n\r\n"},
		{"HTTP/1", "GET / HTTP/1\r\nHost: a\r\n\r\n"},
		{"lower-case http", "GET / http/1.1\r\nHost: a\r\n\r\n"},
		{"PRI", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{"lower-case method", "get / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"method with slash", "G/T / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"method with NUL", "G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"method with high byte", "G\xffT / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"method token chars", "M-S.E_A~R!C*H / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"empty method", " / HTTP/1.1\r\nHost: a\r\n\r\n"},
	}
	// smuggler.py's Transfer-Encoding mutations: odd bytes around and inside
	// the field name and value.
	for _, b := range []byte{0x00, 0x01, 0x04, 0x08, 0x09, 0x0b, 0x0c, 0x0d, 0x1f, 0x20, 0x7f, 0xa0, 0xff} {
		x := string([]byte{b})
		for i, te := range []string{
			x + "Transfer-Encoding: chunked",
			"Transfer-Encoding" + x + ": chunked",
			"Transfer-Encoding:" + x + "chunked",
			"Transfer-Encoding: " + x + "chunked",
			"Transfer-Encoding: chunked" + x,
			"Transfer" + x + "Encoding: chunked",
			"Transfer-Encoding: chun" + x + "ked",
			"X: y" + x + "Transfer-Encoding: chunked",
		} {
			cs = append(cs, corpusCase{fmt.Sprintf("TE mutation %#02x at %d", b, i),
				post + te + "\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"})
			cs = append(cs, corpusCase{fmt.Sprintf("TE mutation %#02x at %d without CL", b, i),
				post + te + "\r\n\r\n3\r\nabc\r\n0\r\n\r\n"})
		}
	}
	return cs
}
