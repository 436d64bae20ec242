package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// twoUpstreams routes /a/ to upstream a over as and /b/ to b over bs.
func twoUpstreams(as []string, bs ...string) string {
	return fmt.Sprintf(`
upstreams:
  - name: a
    timeouts: {idle: 1s}
    backends:
%s  - name: b
    timeouts: {idle: 1s}
    backends:
%sroutes:
  - {path_prefix: /a/, upstream: a}
  - {path_prefix: /b/, upstream: b}
`, yamlBackends(as...), yamlBackends(bs...))
}

func metricValue(t testing.TB, adminURL, series string) string {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return v
		}
	}
	return ""
}

// TestReloadKeepsStateAndRejectsBadFiles: a reload with an invalid file
// changes nothing and counts an error; a valid one swaps routes while a
// backend present in both keeps its drain and counters.
func TestReloadKeepsStateAndRejectsBadFiles(t *testing.T) {
	one, two, three := startBackend(t, named("one")), startBackend(t, named("two")), startBackend(t, named("three"))
	ta := startApp(t, twoUpstreams([]string{one.Addr}, two.Addr))

	if code, body := ta.Get(t, "/a/x"); code != 200 || body != "one" {
		t.Fatalf("before reload: %d %q", code, body)
	}
	pool := ta.poolByName("a")
	b := pool.Lookup(one.Addr)
	if _, err := pool.Drain(one.Addr); err != nil {
		t.Fatal(err)
	}

	// An invalid file: nothing changes.
	if err := os.WriteFile(ta.Path, []byte("upstreams:\n  - name: a\n    balance: fastest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ta.reload(); err == nil {
		t.Fatal("reload of an invalid file succeeded")
	}
	if got := metricValue(t, ta.AdminURL, `kelpie_config_reloads_total{result="error"}`); got != "1" {
		t.Errorf("reloads error metric = %q, want 1", got)
	}
	if code, body := ta.Get(t, "/b/x"); code != 200 || body != "two" {
		t.Fatalf("after bad reload: %d %q", code, body)
	}

	// A valid file: upstream a gains a backend, b moves to another one.
	cfg := twoUpstreams([]string{one.Addr, three.Addr}, three.Addr)
	if err := os.WriteFile(ta.Path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ta.reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := metricValue(t, ta.AdminURL, `kelpie_config_reloads_total{result="success"}`); got != "1" {
		t.Errorf("reloads success metric = %q, want 1", got)
	}
	if code, body := ta.Get(t, "/b/x"); code != 200 || body != "three" {
		t.Fatalf("after reload, /b/ = %d %q, want three", code, body)
	}
	if ta.poolByName("a") != pool || pool.Lookup(one.Addr) != b {
		t.Fatal("reload replaced a pool or backend that is in both configs")
	}
	if b.Admin().String() != "drained" {
		t.Fatalf("drain lost across reload: %s", b.Admin())
	}
	hits := one.Hits()
	for range 20 {
		if code, body := ta.Get(t, "/a/x"); code != 200 || body != "three" {
			t.Fatalf("drained backend's upstream answered %d %q", code, body)
		}
	}
	if one.Hits() != hits {
		t.Fatal("drained backend got traffic after reload")
	}
}

// TestShutdownLetsInFlightFinish: shutdown turns /readyz 503 at once, keeps
// serving new requests for shutdown.readiness_delay, lets a slow in-flight
// request finish with 200, and then refuses new connections.
func TestShutdownLetsInFlightFinish(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	slow := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			started <- struct{}{}
			<-release
		}
		ctx.WriteString("done")
	})
	ta := startApp(t, fmt.Sprintf("shutdown: {readiness_delay: 2s, grace: 10s}\nupstreams:\n  - name: a\n    backends:\n%s", yamlBackends(slow.Addr)))
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs first: a failed test must not leave the handler blocked

	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + ta.ProxyAddr + "/slow")
		err := fasthttp.DoTimeout(req, resp, 20*time.Second)
		inflight <- result{resp.StatusCode(), string(resp.Body()), err}
	}()
	<-started

	done := make(chan error, 1)
	go func() { done <- ta.shutdown() }()
	eventually(t, 2*time.Second, "/readyz 503", func() bool {
		resp, err := http.Get(ta.AdminURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	// Within the readiness delay, new requests are still served.
	if code, body := ta.Get(t, "/fast"); code != 200 || body != "done" {
		t.Fatalf("request during the readiness delay: %d %q", code, body)
	}
	unblock()
	r := <-inflight
	if r.err != nil || r.code != 200 || r.body != "done" {
		t.Fatalf("in-flight request: %d %q %v", r.code, r.body, r.err)
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if c, err := net.DialTimeout("tcp", ta.ProxyAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("proxy still accepts connections after shutdown")
	}
}

// TestReloadsLeakNothing: many reloads and requests leave goroutines and
// file descriptors where they were, once idle upstream connections have
// timed out (timeouts.idle, 1s here): backends leaving a pool must not leave
// connections or their cleaners behind.
func TestReloadsLeakNothing(t *testing.T) {
	one, two := startBackend(t, named("one")), startBackend(t, named("two"))
	ta := startApp(t, twoUpstreams([]string{one.Addr}, two.Addr))
	for range 20 {
		ta.Get(t, "/a/")
	}
	runtime.GC()
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)
	for i := range 30 {
		cfg := twoUpstreams([]string{one.Addr}, two.Addr)
		if i%2 == 1 {
			cfg = twoUpstreams([]string{two.Addr}, one.Addr)
		}
		if err := os.WriteFile(ta.Path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := ta.reload(); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if code, _ := ta.Get(t, "/b/"); code != 200 {
				t.Fatalf("status %d", code)
			}
		}
	}
	var g, fd int
	deadline := time.Now().Add(4900 * time.Millisecond)
	eventually(t, 5*time.Second, "goroutines and descriptors back to baseline", func() bool {
		runtime.GC()
		g, fd = runtime.NumGoroutine(), openFDs(t)
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Logf("goroutines %d (baseline %d), fds %d (baseline %d)\n%s", g, baseG, fd, baseFD, buf[:runtime.Stack(buf, true)])
		}
		return g <= baseG+4 && fd <= baseFD+4
	})
	t.Logf("goroutines %d -> %d, descriptors %d -> %d", baseG, g, baseFD, fd)
}

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// buildKelpie compiles the real binary once per test run.
var buildKelpie = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kelpie-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kelpie")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// TestSignals runs the real binary: SIGHUP with a broken file keeps it
// serving, SIGTERM exits 0.
func TestSignals(t *testing.T) {
	bin, err := buildKelpie()
	if err != nil {
		t.Fatal(err)
	}
	be := startBackend(t, named("one"))
	listen, admin := testkit.FreeAddr(t), testkit.FreeAddr(t)
	path := filepath.Join(t.TempDir(), "kelpie.yaml")
	good := fmt.Sprintf("listen: %q\nadmin: {listen: %q}\nupstreams:\n  - name: a\n    backends:\n%s", listen, admin, yamlBackends(be.Addr))
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-config", path)
	logs, exited := startProcess(t, cmd)
	get := func() int {
		resp, err := http.Get("http://" + listen + "/")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, 10*time.Second, "kelpie serving", func() bool { return get() == 200 })

	if err := os.WriteFile(path, []byte("upstreams: [{name: a, balance: nope}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "reload failure logged", func() bool { return strings.Contains(logs.String(), "config reload failed") })
	if got := get(); got != 200 {
		t.Fatalf("after a bad reload the proxy answers %d", got)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("kelpie did not exit after SIGTERM")
	}
}

// TestCheckCommand runs `kelpie check` on the example and on a broken file.
func TestCheckCommand(t *testing.T) {
	var out, errb strings.Builder
	if code := run([]string{"check", "-config", "../../config.example.yaml"}, &out, &errb); code != 0 {
		t.Fatalf("check example: exit %d: %s", code, errb.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("upstreams:\n  - name: a\n    balanse: x\n    backends: [{address: \"h:1\"}]\nroutes: [{upstream: nope}]\n"), 0o644)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "-config", bad}, &out, &errb); code != 1 {
		t.Fatalf("check bad: exit %d, want 1", code)
	}
	want := bad + ":3: unknown key \"balanse\" in upstream\n"
	if errb.String() != want {
		t.Fatalf("check bad printed %q, want %q", errb.String(), want)
	}
}

func TestVersion(t *testing.T) {
	var out strings.Builder
	if code := run([]string{"version"}, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "kelpie ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
}

// startProcess starts a kelpie process with its log in a buffer (shown if
// the test fails) and returns the buffer and a channel that gets Wait's
// result. The process is killed at cleanup if it is still running.
func startProcess(t *testing.T, cmd *exec.Cmd) (*testkit.LogBuffer, <-chan error) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	cmd.Stdout, cmd.Stderr = io.Discard, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("kelpie log:\n%s", logs.String())
		}
	})
	return logs, exited
}
