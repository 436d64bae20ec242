package proxy

import (
	"errors"
	"strings"
	"testing"
)

// feed runs a fresh head scan over in, cut into reads at the given offsets.
func feed(in string, cuts ...int) (headScan, error) {
	s := newHeadScan()
	prev := 0
	for _, c := range append(cuts, len(in)) {
		if _, err := s.scan([]byte(in[prev:c])); err != nil {
			return s, err
		}
		prev = c
	}
	return s, nil
}

// TestHeadScanFollowsFraming: on streams of well-formed requests, whose
// bodies are full of bare LFs, the scan finds nothing wrong and ends between
// requests, however the stream is cut into reads; on each stream with a bare
// LF in a head, chunk line or trailer it finds it, however cut.
func TestHeadScanFollowsFraming(t *testing.T) {
	good := []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n\n\n\nx\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\ncontent-length:  4 \r\n\r\na\n\nbGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;x=\"y\"\r\na\n\nb\r\nA\r\n\n\n\n\n\n\n\n\n\n\n\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + strings.Repeat("v", 100) + "\r\n\r\n",
	}
	bad := []string{
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\n\r\n",
		"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\nGET",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n\n\nGET / HTTP/1.1\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\n\n\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2;a\n\r\n\n\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n\n\n\r\n0\r\nX: 1\n\r\n",
	}
	for _, in := range good {
		for cut := 0; cut <= len(in); cut++ {
			s, err := feed(in, cut)
			if err != nil || s.state != scanHead || s.heads != 0 || s.midRequest() {
				t.Fatalf("%q cut at %d: err %v, state %d heads %d: want the scan between requests", in, cut, err, s.state, s.heads)
			}
		}
		cuts := make([]int, len(in))
		for i := range cuts {
			cuts[i] = i
		}
		if _, err := feed(in, cuts...); err != nil {
			t.Fatalf("%q byte by byte: %v", in, err)
		}
		if s, _ := feed(in[:len(in)-1]); !s.midRequest() {
			t.Errorf("%q without its last byte: not mid-request", in)
		}
	}
	for _, in := range bad {
		for cut := 0; cut <= len(in); cut++ {
			if _, err := feed(in, cut); !errors.Is(err, errBareLF) {
				t.Fatalf("%q cut at %d: %v, want errBareLF", in, cut, err)
			}
		}
	}
}

// TestHeadScanStopsOnFramingItCannotFollow: framing kelpie refuses makes the
// scan stop following, rather than guess where the next head starts.
func TestHeadScanStopsOnFramingItCannotFollow(t *testing.T) {
	for _, in := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n\n\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n\n\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n\n\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\n\n\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\n\n",
	} {
		s, err := feed(in)
		if err != nil || s.state != scanOff || s.midRequest() {
			t.Errorf("%q: err %v state %d, want the scan off", in, err, s.state)
		}
	}
}

func BenchmarkHeadScan(b *testing.B) {
	in := []byte("GET /api/v1/items?limit=10 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench/1.0\r\n" +
		"Accept: application/json\r\nAccept-Encoding: gzip\r\nCookie: session=0123456789abcdef\r\n\r\n")
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	s := newHeadScan()
	for b.Loop() {
		if _, err := s.scan(in); err != nil {
			b.Fatal(err)
		}
	}
}
