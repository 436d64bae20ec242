package proxy

import (
	"bytes"
	"errors"
)

// errBareLF is what a client connection's Read returns once its head scan
// has seen a line ending in LF alone; parseError answers it with 400.
var errBareLF = errors.New("request head line ends in a bare LF")

// headScan checks line endings in the raw byte stream of a client
// connection, before fasthttp parses it. fasthttp accepts a bare LF at the
// end of the request line (and before it), which kelpie's check never sees
// because the request line is gone by then; and a head whose lines all end
// in LF alone never shows fasthttp the CRLFCRLF it waits for, so the client
// would get no answer until the read timeout. RFC 9112 section 2.2 lets a
// recipient accept a bare LF; a proxy that does so sees lines its backends
// may not, so kelpie refuses: every line of a request head, chunk header
// and trailer section must end in CRLF.
//
// To know where heads are, the scan follows each request's framing: a
// Content-Length body or a chunked body is skipped (chunk by chunk). When
// the framing is anything kelpie's check refuses anyway (two lengths, a
// coding other than chunked, an unparsable length or chunk size), the
// connection is about to be closed with a 4xx, and the scan stops rather
// than guess; it never refuses a request on a guess. Following the framing
// also tells clientConn when the stream ends inside a request, and inside
// which request's body (midRequest, inBody): fasthttp's chunked reader would
// take that end, or a refused trailer, for the end of the body. It does not
// allocate.
type headScan struct {
	state   scanState
	prevCR  bool     // the last byte seen was CR
	lineLen int      // bytes of the current line so far, its CR included
	heads   int      // non-empty lines so far in this head (request line included)
	remain  int64    // body or chunk-data bytes still to skip
	cl      int64    // the head's Content-Length, -1 for none
	chunked bool     // the head has Transfer-Encoding: chunked
	reqs    int      // request heads completed on the connection
	size    int64    // chunk size being parsed
	digits  int      // hex digits of the chunk size so far
	ext     bool     // past the chunk size: in a chunk extension
	stray   bool     // an empty line came before this head's request line
	line    [48]byte // the start of the current line: enough for a framing field
}

type scanState uint8

const (
	scanHead      scanState = iota // request line and header fields
	scanBody                       // Content-Length body
	scanChunkSize                  // chunk-size [ chunk-ext ] CRLF
	scanChunkData                  // chunk data
	scanChunkEnd                   // the CRLF after chunk data
	scanTrailer                    // trailer section after the last chunk
	scanOff                        // framing kelpie refuses: stop following
)

func newHeadScan() headScan { return headScan{cl: -1} }

// scan follows b, the next bytes of the stream. It returns the number of
// bytes before a bare LF and errBareLF, or len(b) and nil.
func (s *headScan) scan(b []byte) (int, error) {
	i := 0
	for i < len(b) && s.state != scanOff {
		switch s.state {
		case scanBody, scanChunkData:
			n := int64(len(b) - i)
			if n > s.remain {
				n = s.remain
			}
			i += int(n)
			s.remain -= n
			if s.remain == 0 {
				if s.state == scanBody {
					s.startHead()
				} else {
					s.state = scanChunkEnd
					s.lineLen, s.prevCR = 0, false
				}
			}
		case scanChunkEnd:
			// Exactly CRLF; anything else is fasthttp's to refuse.
			c := b[i]
			i++
			switch {
			case c == '\r' && !s.prevCR:
				s.prevCR = true
			case c == '\n' && s.prevCR:
				s.startChunk()
			default:
				s.state = scanOff
			}
		case scanChunkSize:
			c := b[i]
			i++
			switch {
			case c == '\n':
				if !s.prevCR {
					return i - 1, errBareLF
				}
				s.endChunkLine()
			case c == '\r':
				s.prevCR = true
			case s.prevCR:
				s.state = scanOff // bare CR: refused by fasthttp
			case !s.ext && hexVal(c) >= 0:
				s.digits++
				if s.digits > 15 {
					s.state = scanOff // beyond any size kelpie accepts
					break
				}
				s.size = s.size<<4 | int64(hexVal(c))
			default:
				s.ext = true // extension, or whitespace before one
			}
		default: // scanHead, scanTrailer: lines up to an empty one
			seg := b[i:]
			nl := bytes.IndexByte(seg, '\n')
			if nl < 0 {
				s.takeLine(seg)
				s.prevCR = seg[len(seg)-1] == '\r'
				i = len(b)
				break
			}
			cr := s.prevCR
			if nl > 0 {
				s.takeLine(seg[:nl])
				cr = seg[nl-1] == '\r'
			}
			if !cr {
				return i + nl, errBareLF
			}
			i += nl + 1
			s.endLine()
		}
	}
	return len(b), nil
}

// midRequest reports whether the stream so far ends inside a request, past
// its request line (a head cut off before that is fasthttp's parse error
// anyway), as far as the scan follows it.
func (s *headScan) midRequest() bool {
	return s.state != scanOff && (s.state != scanHead || s.heads > 0)
}

// atBoundary reports whether the stream so far ends exactly at the end of a
// request (or at its start): the next byte starts a request head.
func (s *headScan) atBoundary() bool {
	return s.state == scanHead && s.heads == 0 && s.lineLen == 0 && !s.prevCR && !s.stray
}

// takeLine notes part of the current line: its length, and its start for
// the framing headers.
func (s *headScan) takeLine(p []byte) {
	if s.lineLen < len(s.line) {
		copy(s.line[s.lineLen:], p)
	}
	s.lineLen += len(p)
}

// endLine ends a head or trailer line (its CRLF seen).
func (s *headScan) endLine() {
	n := s.lineLen - 1 // without the CR
	s.lineLen, s.prevCR = 0, false
	if n > 0 {
		s.heads++
		if s.state == scanHead && s.heads > 1 {
			s.framing(n)
		}
		return
	}
	switch {
	case s.state == scanTrailer:
		s.startHead()
	case s.heads == 0:
		// An empty line before the request line, which fasthttp skips.
		s.stray = true
	default:
		s.reqs++
		s.body()
	}
}

// body starts following the body of the head just ended.
func (s *headScan) body() {
	switch {
	case s.chunked:
		s.startChunk()
	case s.cl > 0:
		s.state, s.remain = scanBody, s.cl
	default:
		s.startHead()
	}
}

// framing notes a Content-Length or Transfer-Encoding field of n bytes
// whose start is in s.line.
func (s *headScan) framing(n int) {
	if c := s.line[0] | 0x20; c != 'c' && c != 't' {
		return // the common case: neither Content-Length nor Transfer-Encoding
	}
	line := s.line[:min(n, len(s.line))]
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return
	}
	name := line[:colon]
	isCL, isTE := equalFold(name, "Content-Length"), equalFold(name, "Transfer-Encoding")
	if !isCL && !isTE {
		return
	}
	if n > len(s.line) || s.cl >= 0 || s.chunked {
		s.state = scanOff // longer than any value kelpie accepts, or a second framing field
		return
	}
	value := trimOWS(line[colon+1:])
	if isTE {
		if !equalFold(value, "chunked") {
			s.state = scanOff
		}
		s.chunked = true
		return
	}
	if len(value) == 0 || len(value) > 18 {
		s.state = scanOff
		return
	}
	var v int64
	for _, c := range value {
		if c < '0' || c > '9' {
			s.state = scanOff
			return
		}
		v = v*10 + int64(c-'0')
	}
	s.cl = v
}

// endChunkLine ends a chunk-size line.
func (s *headScan) endChunkLine() {
	s.prevCR = false
	switch {
	case s.digits == 0:
		s.state = scanOff
	case s.size == 0:
		s.state, s.lineLen = scanTrailer, 0
	default:
		s.state, s.remain = scanChunkData, s.size
	}
}

func (s *headScan) startChunk() {
	s.state, s.size, s.digits, s.ext, s.prevCR = scanChunkSize, 0, 0, false, false
}

func (s *headScan) startHead() {
	*s = headScan{state: scanHead, cl: -1, reqs: s.reqs}
}

// inBody returns the number (from 1, as fasthttp's ConnRequestNum) of the
// request whose body the scan is in, or 0 when it is in a head.
func (s *headScan) inBody() int {
	if s.state == scanHead || s.state == scanOff {
		return 0
	}
	return s.reqs
}

func hexVal(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
