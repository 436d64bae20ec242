package testkit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// fakeTB records what a helper reports instead of ending the real test.
// Fatal and Skip end the goroutine, as the real ones do; run the helper
// through capture.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// capture runs fn with a fakeTB on its own goroutine and returns what it
// reported.
func capture(t *testing.T, fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func get(t *testing.T, addr, path string) (int, string, error) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + path)
	err := fasthttp.DoTimeout(req, resp, 5*time.Second)
	return resp.StatusCode(), string(resp.Body()), err
}

func TestBackendCountsAndCloses(t *testing.T) {
	b := StartBackend(t, Named("one"))
	for range 3 {
		if code, body, err := get(t, b.Addr, "/x"); err != nil || code != 200 || body != "one" {
			t.Fatalf("GET: %d %q %v", code, body, err)
		}
	}
	if n := b.Requests.Load(); n != 3 {
		t.Errorf("Requests = %d, want 3", n)
	}
	if n := b.Conns.Load(); n != 1 {
		t.Errorf("Conns = %d, want 1 (the client keeps its connection)", n)
	}
	if n := b.BytesRead.Load(); n < 3*int64(len("GET /x HTTP/1.1\r\n")) {
		t.Errorf("BytesRead = %d, too few for three requests", n)
	}
	b.Close()
	b.Close() // again: no panic, no hang
	if c, err := net.DialTimeout("tcp", b.Addr, time.Second); err == nil {
		c.Close()
		t.Fatal("closed backend still accepts")
	}
}

// TestBackendKillResets: a request in progress at the kill ends with a
// reset, not a response, and new connects are refused.
func TestBackendKillResets(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	b := StartBackend(t, func(ctx *fasthttp.RequestCtx) {
		close(entered)
		<-release
		ctx.WriteString("too late")
	})
	t.Cleanup(func() { close(release) }) // before the backend's Close, which waits for the handler
	c, err := net.Dial("tcp", b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	<-entered
	b.Kill()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 100))
	if n != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("in-flight request after Kill: read %d, %v; want a reset", n, err)
	}
	if c, err := net.DialTimeout("tcp", b.Addr, time.Second); err == nil {
		c.Close()
		t.Fatal("killed backend still accepts")
	}
}

func TestRawServerReadsAndCleansUp(t *testing.T) {
	var returned atomic.Int64
	var addr string
	t.Run("serve", func(t *testing.T) {
		s := StartRaw(t, func(s *RawServer, c net.Conn, br *bufio.Reader) {
			for s.ReadRequest(br) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
			Hung(s, c, br)
			returned.Add(1)
		})
		addr = s.Addr
		for range 2 {
			if code, body, err := get(t, s.Addr, "/"); err != nil || code != 200 || body != "ok" {
				t.Fatalf("GET: %d %q %v", code, body, err)
			}
		}
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "NOT HTTP\r\n\r\n") // ends the request loop; Hung waits on
		Eventually(t, 5*time.Second, "second connection", func() bool { return s.Conns.Load() == 2 })
		if n := s.Heads.Load(); n != 2 {
			t.Errorf("Heads = %d, want 2", n)
		}
	})
	// The subtest's cleanup closed both hung connections and waited for
	// their handlers.
	if n := returned.Load(); n != 2 {
		t.Fatalf("%d of 2 hung handlers returned by the end of their test", n)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("raw server still accepts after its test ended")
	}
}

func TestFreeAddrRefuses(t *testing.T) {
	addr := FreeAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q, want loopback", addr)
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("connect to %s succeeded", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to %s: %v, want refused", addr, err)
	}
	port := FreePort(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("FreePort %d not free for TCP: %v", port, err)
	}
	ln.Close()
	pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("FreePort %d not free for UDP: %v", port, err)
	}
	pc.Close()
}

func TestLogBuffer(t *testing.T) {
	var l LogBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				l.Logger().Info("line", "writer", i, "n", j)
			}
		}()
	}
	l.WaitFor(t, "writer=7 n=49", 5*time.Second) // woken by writes, not polling
	wg.Wait()
	if n := strings.Count(l.String(), "msg=line"); n != 400 {
		t.Fatalf("%d lines, want 400", n)
	}
	l.Logger().Debug("quiet")
	if !strings.Contains(l.String(), "level=DEBUG msg=quiet") {
		t.Fatal("Logger drops debug lines")
	}
	f := capture(t, func(tb testing.TB) { l.WaitFor(tb, "never written", 50*time.Millisecond) })
	if !strings.Contains(f.fatal, `"never written"`) {
		t.Fatalf("WaitFor on a missing line reported %q", f.fatal)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, 5*time.Second, "n reaches 3", func() bool { n++; return n == 3 })
	start := time.Now()
	f := capture(t, func(tb testing.TB) { Eventually(tb, 50*time.Millisecond, "never", func() bool { return false }) })
	if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
		t.Errorf("gave up after %s, want about 50ms", d)
	}
	if !strings.Contains(f.fatal, "waiting for never") {
		t.Fatalf("Eventually reported %q", f.fatal)
	}
}

// TestLoadCountsEveryFailure: the load client neither retries nor hides a
// failure; Stop ends an endless run.
func TestLoadCountsEveryFailure(t *testing.T) {
	b := StartBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/bad" {
			ctx.SetStatusCode(503)
		}
		ctx.WriteString("x")
	})
	run := StartLoad(b.Addr, LoadOptions{Workers: 4, Requests: 50,
		Path: func(w, i int) string {
			if i%10 == 9 {
				return "/bad"
			}
			return "/ok"
		}}).Wait()
	if run.Total() != 200 || run.Failed() != 20 || run.OK() != 180 {
		t.Fatalf("%s; want 200 requests, 20 failed", run)
	}
	if n := b.Requests.Load(); n != 200 {
		t.Errorf("backend saw %d requests for 200 sent: the client retried", n)
	}
	if errs := run.Errors(); len(errs) != maxErrs || !strings.Contains(errs[0], "GET /bad: 503") {
		t.Errorf("Errors = %q", errs)
	}
	if q := run.Quantile(1); q <= 0 || q < run.Quantile(0.5) {
		t.Errorf("max latency %s, median %s", q, run.Quantile(0.5))
	}

	endless := StartLoad(b.Addr, LoadOptions{Workers: 2, Requests: 1 << 30})
	Eventually(t, 5*time.Second, "endless load running", func() bool { return endless.OK() > 10 })
	endless.Stop()
	if n := endless.Total(); n != endless.Total() || endless.Failed() != 0 {
		t.Fatalf("after Stop: %s", endless)
	}
	after := endless.Total()
	if endless.Stop().Total() != after {
		t.Fatal("requests after Stop")
	}
}

func TestMissingSkipsOnlyUnderShort(t *testing.T) {
	f := capture(t, func(tb testing.TB) { missing(tb, true, "Chromium", "install it") })
	if f.fatal != "" || !strings.Contains(f.skip, "-short") || !strings.Contains(f.skip, "needs Chromium (install it)") {
		t.Errorf("short: skip %q, fatal %q; want a skip naming what and how", f.skip, f.fatal)
	}
	f = capture(t, func(tb testing.TB) { missing(tb, false, "Chromium", "install it") })
	if f.skip != "" || !strings.Contains(f.fatal, "needs Chromium: install it") {
		t.Errorf("full run: skip %q, fatal %q; want a failure", f.skip, f.fatal)
	}
}

// fakeCommand writes an executable shell script name into dir that exits
// with code.
func fakeCommand(t *testing.T, dir, name string, code int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(fmt.Sprintf("#!/bin/sh\nexit %d\n", code)), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNeedsFindOrReport: each lookup returns what it finds, and otherwise
// reports the thing missing (a skip under -short, a failure without).
func TestNeedsFindOrReport(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("PATH", empty)
	t.Setenv("KELPIE_CHROMIUM", "")
	t.Setenv("KELPIE_CONSUL_BIN", filepath.Join(empty, "no-consul"))
	for name, lookup := range map[string]func(testing.TB, bool) string{
		"Chromium": chromium, "a consul binary": consulBinary, "a container engine": containerEngine,
	} {
		for _, short := range []bool{true, false} {
			f := capture(t, func(tb testing.TB) { lookup(tb, short) })
			got := f.fatal
			if short {
				got = f.skip
			}
			if !strings.Contains(got, "needs "+name) || (f.skip != "") != short || (f.fatal != "") == short {
				t.Errorf("%s missing, short=%v: skip %q, fatal %q", name, short, f.skip, f.fatal)
			}
		}
	}

	found := t.TempDir()
	t.Setenv("PATH", found)
	chrome := fakeCommand(t, found, "chromium", 0)
	consul := fakeCommand(t, found, "consul", 0)
	t.Setenv("KELPIE_CONSUL_BIN", consul)
	fakeCommand(t, found, "docker", 1) // installed, daemon not answering
	podman := fakeCommand(t, found, "podman", 0)
	for what, got := range map[string]string{
		chrome: chromium(t, false), consul: consulBinary(t, false), podman: containerEngine(t, false),
	} {
		if got != what {
			t.Errorf("found %q, want %q", got, what)
		}
	}
}

func TestConsulBinaryPath(t *testing.T) {
	t.Setenv("KELPIE_CONSUL_BIN", "")
	t.Setenv("XDG_CACHE_HOME", "/nonexistent/cache")
	if p, want := consulPath(), "/nonexistent/cache/kelpie/bin/consul-"+ConsulVersion; p != want {
		t.Fatalf("default path %q, want %q", p, want)
	}
	t.Setenv("KELPIE_CONSUL_BIN", "/opt/consul")
	if p := consulPath(); p != "/opt/consul" {
		t.Fatalf("with KELPIE_CONSUL_BIN: %q", p)
	}
}

// TestFreePortsDistinct: the ports of one FreePorts call are all different
// and all free once it returns.
func TestFreePortsDistinct(t *testing.T) {
	for range 20 {
		ps := FreePorts(t, 8)
		seen := map[int]bool{}
		for _, p := range ps {
			if seen[p] {
				t.Fatalf("port %d returned twice in %v", p, ps)
			}
			seen[p] = true
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				t.Fatalf("port %d of %v not free: %v", p, ps, err)
			}
			ln.Close()
		}
	}
}
