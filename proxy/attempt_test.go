package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/balancer"
	"github.com/valyala/fasthttp"
)

// step is one scripted answer of a backend: a response with status and
// body, or err with the wire facts a real connection would have shown.
type step struct {
	status int
	body   string
	header [2]string // one response header, name and value, when name is set
	err    error
	w      wire
}

// scripted is a backend behind the transport seam, with no socket: each Do
// takes the next step (the last one repeats).
type scripted struct {
	mu    sync.Mutex
	steps []step
	calls int
}

func (s *scripted) Do(_ *fasthttp.Request, resp *fasthttp.Response) (wire, error) {
	s.mu.Lock()
	st := s.steps[min(s.calls, len(s.steps)-1)]
	s.calls++
	s.mu.Unlock()
	if st.err != nil {
		return st.w, st.err
	}
	resp.SetStatusCode(st.status)
	if st.header[0] != "" {
		resp.Header.Set(st.header[0], st.header[1])
	}
	resp.SetBodyStream(strings.NewReader(st.body), len(st.body)) // as HostClient streams it
	return wire{sent: true, gotBytes: true}, nil
}

func (s *scripted) CloseIdleConnections() {}

// Scripted failures, with the facts a real connection shows for each.
var (
	refused   = step{err: &dialError{syscall.ECONNREFUSED}}
	upTimeout = step{err: fasthttp.ErrTimeout, w: wire{sent: true}}
	reset     = step{err: syscall.ECONNRESET, w: wire{sent: true}}
	garbled   = step{err: errors.New("cannot parse response status line"), w: wire{sent: true, gotBytes: true}}
	staleConn = step{err: io.EOF, w: wire{reused: true, sent: true}}
	notSent   = step{err: errors.New("missing required host header in request")} // fasthttp refused it: nothing written
	noConns   = step{err: fasthttp.ErrNoFreeConns}
)

func ok(body string) step { return step{status: 200, body: body} }

// recordingGuard records the results its backend's attempts report.
type recordingGuard struct {
	mu      sync.Mutex
	results []balancer.Result
}

func (g *recordingGuard) Admit() (func(balancer.Result), error) {
	return func(r balancer.Result) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.results = append(g.results, r)
	}, nil
}

func (g *recordingGuard) seen() []balancer.Result {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]balancer.Result(nil), g.results...)
}

// accessRecords collects the access log's records.
type accessRecords struct {
	mu   sync.Mutex
	recs []map[string]slog.Value
}

func (a *accessRecords) Enabled(context.Context, slog.Level) bool { return true }
func (a *accessRecords) WithAttrs([]slog.Attr) slog.Handler       { return a }
func (a *accessRecords) WithGroup(string) slog.Handler            { return a }
func (a *accessRecords) Handle(_ context.Context, r slog.Record) error {
	m := map[string]slog.Value{}
	r.Attrs(func(at slog.Attr) bool { m[at.Key] = at.Value; return true })
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recs = append(a.recs, m)
	return nil
}

func (a *accessRecords) last(t *testing.T) map[string]slog.Value {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.recs) == 0 {
		t.Fatal("no access log record")
	}
	return a.recs[len(a.recs)-1]
}

// scriptedProxy is a Proxy over backends "a:80", "b:80", ... that follow
// scripts, each with a recording guard; requests are served in memory.
type scriptedProxy struct {
	p      *Proxy
	pool   *balancer.Pool
	up     *Upstream
	guards map[string]*recordingGuard
	log    *accessRecords
}

func newScriptedProxy(t *testing.T, retries int, scripts ...[]step) *scriptedProxy {
	t.Helper()
	sp := &scriptedProxy{guards: map[string]*recordingGuard{}, log: &accessRecords{}}
	byAddr := map[string]*scripted{}
	var ms []balancer.Member
	for i, s := range scripts {
		addr := string(rune('a'+i)) + ":80"
		byAddr[addr] = &scripted{steps: s}
		sp.guards[addr] = &recordingGuard{}
		ms = append(ms, balancer.Member{Address: addr})
	}
	sp.pool = balancer.NewPool(balancer.Options{Name: "web", NewGuard: func(b *balancer.Backend) balancer.Guard { return sp.guards[b.Address()] }})
	t.Cleanup(sp.pool.Close)
	sp.pool.SetMembers(balancer.SourceStatic, ms)
	up := &Upstream{Pool: sp.pool, Retries: retries, newTransport: func(addr string) transport { return byAddr[addr] }}
	p, err := New(Options{AccessLog: slog.New(sp.log)}, []Route{{Upstream: up}})
	if err != nil {
		t.Fatal(err)
	}
	sp.p, sp.up = p, up
	return sp
}

// serve runs one raw request through the proxy's handler, without sockets.
func (sp *scriptedProxy) serve(t *testing.T, request string) *fasthttp.Response {
	t.Helper()
	var req fasthttp.Request
	if err := req.Read(bufio.NewReader(strings.NewReader(request))); err != nil {
		t.Fatal(err)
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	sp.p.ServeFastHTTP(&ctx)
	resp := &fasthttp.Response{}
	ctx.Response.CopyTo(resp)
	return resp
}

// TestRetriesMetricMatchesAccessLog: kelpie_retries_total grows by exactly
// the retries the access log reports, stale-connection retries included,
// also when the stale connection is met on a later attempt.
func TestRetriesMetricMatchesAccessLog(t *testing.T) {
	cases := []struct {
		name    string
		retries int
		scripts [][]step
		status  int
		want    int // retries
	}{
		{"first attempt answers", 1, [][]step{{ok("a")}, {ok("b")}}, 200, 0},
		{"reset then another backend", 1, [][]step{{reset}, {ok("b")}}, 200, 1},
		{"stale then same backend", 0, [][]step{{staleConn, ok("a")}}, 200, 1},
		{"stale on a later attempt", 1, [][]step{{reset}, {staleConn, ok("b")}}, 200, 2},
		{"two stale on a later attempt", 1, [][]step{{upTimeout}, {staleConn, staleConn, ok("b")}}, 200, 3},
		{"503 retried", 1, [][]step{{{status: 503}}, {ok("b")}}, 200, 1},
		{"budget spent", 1, [][]step{{reset}, {reset}, {ok("c")}}, 502, 1},
		{"no retry for a local refusal", 2, [][]step{{notSent}, {ok("b")}}, 400, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sp := newScriptedProxy(t, tc.retries, tc.scripts...)
			resp := sp.serve(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp.StatusCode() != tc.status {
				t.Fatalf("status %d %q, want %d", resp.StatusCode(), resp.Body(), tc.status)
			}
			logged := int(sp.log.last(t)["retries"].Int64())
			metric := int(sp.up.Stats.Retries.Load())
			if logged != tc.want || metric != tc.want {
				t.Errorf("access log retries %d, kelpie_retries_total %d, want both %d", logged, metric, tc.want)
			}
		})
	}
}

// TestAttemptBlame: what each attempt's outcome reports to its backend's
// guard and counters. Only what the backend did counts against it.
func TestAttemptBlame(t *testing.T) {
	cases := []struct {
		name     string
		step     step
		status   int
		body     string
		result   balancer.Result
		requests uint64 // the backend's finished attempts that counted
		failures uint64
	}{
		{"200", ok("hi"), 200, "hi", balancer.ResultOK, 1, 0},
		{"404 is an answer", step{status: 404, body: "no"}, 404, "no", balancer.ResultOK, 1, 0},
		{"502 from the backend", step{status: 502, body: "bad"}, 502, "bad", balancer.ResultGatewayStatus, 1, 1},
		{"connect refused", refused, 502, "kelpie: cannot connect to backend\n", balancer.ResultConnectFailed, 1, 1},
		{"timeout", upTimeout, 504, "kelpie: backend timed out\n", balancer.ResultTimeout, 1, 1},
		{"reset", reset, 502, "kelpie: backend connection failed\n", balancer.ResultReset, 1, 1},
		{"malformed response", garbled, 502, "kelpie: bad response from backend\n", balancer.ResultReset, 1, 1},
		{"refused by fasthttp before sending", notSent, 400, "kelpie: request cannot be forwarded\n", balancer.ResultLocal, 0, 0},
		{"connection cap", noConns, 503, "kelpie: backend connection limit reached\n", balancer.ResultLocal, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sp := newScriptedProxy(t, 0, []step{tc.step})
			resp := sp.serve(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp.StatusCode() != tc.status || string(resp.Body()) != tc.body {
				t.Fatalf("client got %d %q, want %d %q", resp.StatusCode(), resp.Body(), tc.status, tc.body)
			}
			if got := sp.guards["a:80"].seen(); len(got) != 1 || got[0] != tc.result {
				t.Errorf("guard saw %v, want [%v]", got, tc.result)
			}
			b := sp.pool.Lookup("a:80")
			if b.Requests() != tc.requests || b.Failures() != tc.failures || b.InFlight() != 0 {
				t.Errorf("requests %d failures %d in flight %d, want %d %d 0", b.Requests(), b.Failures(), b.InFlight(), tc.requests, tc.failures)
			}
		})
	}
}

// TestStaleRetryBlamesNobody: a reused connection the backend had closed is
// retried on the same backend and reported to its guard as local.
func TestStaleRetryBlamesNobody(t *testing.T) {
	sp := newScriptedProxy(t, 0, []step{staleConn, ok("fresh")})
	resp := sp.serve(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode() != 200 || string(resp.Body()) != "fresh" {
		t.Fatalf("got %d %q", resp.StatusCode(), resp.Body())
	}
	want := []balancer.Result{balancer.ResultLocal, balancer.ResultOK}
	if got := sp.guards["a:80"].seen(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("guard saw %v, want %v", got, want)
	}
	if b := sp.pool.Lookup("a:80"); b.Failures() != 0 || b.Requests() != 1 {
		t.Errorf("failures %d requests %d, want 0 and 1", b.Failures(), b.Requests())
	}
	// A POST is not idempotent: the same stale connection is the backend's
	// reset, not retried.
	sp = newScriptedProxy(t, 0, []step{staleConn, ok("fresh")})
	if resp := sp.serve(t, "POST / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode() != 502 {
		t.Fatalf("POST on a stale connection: %d, want 502", resp.StatusCode())
	}
}

// TestClassifyClientFirst: when the client's body broke off, the upstream
// request failed because of it, whatever error the backend side showed.
func TestClassifyClientFirst(t *testing.T) {
	sent := wire{sent: true, gotBytes: false}
	for _, tc := range []struct {
		name   string
		rb     *reqBody
		status int
	}{
		{"client closed", &reqBody{touched: true, req: 1, conn: &clientConn{rerr: io.ErrUnexpectedEOF, rerrReq: 1}, err: io.ErrUnexpectedEOF}, 400},
		{"client stalled, fasthttp's error hides it", &reqBody{touched: true, req: 2, conn: &clientConn{rerr: os.ErrDeadlineExceeded, rerrReq: 2}, err: errors.New("broken chunk")}, 408},
		{"bare LF in a chunk line", &reqBody{touched: true, req: 1, conn: &clientConn{rerr: errBareLF, rerrReq: 1}, err: errBareLF}, 400},
		{"client vanished mid-chunk", &reqBody{touched: true, err: io.ErrUnexpectedEOF}, 400},
		{"client reset", &reqBody{touched: true, err: syscall.ECONNRESET}, 400},
		{"client upTimeout", &reqBody{touched: true, err: os.ErrDeadlineExceeded}, 408},
		{"body too large", &reqBody{touched: true, tooLarge: true}, 413},
	} {
		for _, err := range []error{syscall.EPIPE, fasthttp.ErrTimeout, io.EOF, errors.New("copied 3 bytes from body stream instead of 9")} {
			o := classify(err, sent, false, tc.rb)
			if o.result != balancer.ResultLocal || !o.client || o.retry || o.status != tc.status {
				t.Errorf("%s, upstream error %v: %+v, want local, client, no retry, %d", tc.name, err, o, tc.status)
			}
		}
	}
	// The same errors with a whole body are the backend's.
	if o := classify(syscall.EPIPE, sent, false, &reqBody{touched: true}); o.result != balancer.ResultReset {
		t.Errorf("EPIPE with the body sent whole: %v, want reset", o.result)
	}
}

// countingTransport counts CloseIdleConnections calls.
type countingTransport struct{ closed atomic.Int64 }

func (c *countingTransport) Do(*fasthttp.Request, *fasthttp.Response) (wire, error) {
	return wire{}, errors.New("not used")
}
func (c *countingTransport) CloseIdleConnections() { c.closed.Add(1) }

// TestTransportsKeptAndSwept: a backend keeps its transport across snapshot
// rebuilds and reloads with the same settings; new settings swap it and
// close the old one's idle connections; a backend that left its pool, or
// whose upstream a reload dropped, is swept out, its idle connections
// closed.
func TestTransportsKeptAndSwept(t *testing.T) {
	made := map[string][]*countingTransport{}
	mk := func(addr string) transport {
		c := &countingTransport{}
		made[addr] = append(made[addr], c)
		return c
	}
	pool := balancer.NewPool(balancer.Options{})
	t.Cleanup(pool.Close)
	pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "a:80"}, {Address: "b:80"}})
	a := pool.Lookup("a:80")
	var ts transports
	up := &Upstream{Pool: pool, newTransport: mk}
	first := ts.get(up, a)
	pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "a:80"}, {Address: "b:80"}, {Address: "c:80"}})
	reload := &Upstream{Pool: pool, newTransport: mk, ConnectTimeout: DefaultConnectTimeout} // same settings, spelled out
	if ts.get(up, a) != first || ts.get(reload, a) != first || len(made["a:80"]) != 1 {
		t.Fatalf("a rebuild or a same-settings reload made a new transport (%d made)", len(made["a:80"]))
	}
	changed := &Upstream{Pool: pool, newTransport: mk, ResponseTimeout: time.Second}
	if ts.get(changed, a) == first || len(made["a:80"]) != 2 {
		t.Fatal("new connection settings kept the old transport")
	}
	if n := made["a:80"][0].closed.Load(); n != 1 {
		t.Errorf("the replaced transport's idle connections closed %d times, want 1", n)
	}
	pool.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "b:80"}})
	ts.get(changed, pool.Lookup("b:80")) // a backend's first request sweeps
	if n := made["a:80"][1].closed.Load(); n != 1 {
		t.Errorf("the departed backend's idle connections closed %d times, want 1", n)
	}
	if _, ok := (*ts.m.Load())[a]; ok {
		t.Error("the departed backend is still in the transport map")
	}

	// A reload that drops an upstream drops its backends' transports.
	other := balancer.NewPool(balancer.Options{})
	t.Cleanup(other.Close)
	other.SetMembers(balancer.SourceStatic, []balancer.Member{{Address: "z:80"}})
	ts.get(&Upstream{Pool: other, newTransport: mk}, other.Lookup("z:80"))
	ts.retain([]Route{{Upstream: changed}})
	if n := made["z:80"][0].closed.Load(); n != 1 {
		t.Errorf("the dropped upstream's backend closed its idle connections %d times, want 1", n)
	}
	m := *ts.m.Load()
	if _, ok := m[other.Lookup("z:80")]; ok || m[pool.Lookup("b:80")] == nil {
		t.Errorf("after the reload the map holds %d backends, want only b:80", len(m))
	}
}
