package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kelpie-lb/kelpie/internal/testkit"
)

// startBackendProcess builds bench/cmd/backend and runs it as its own
// process on a free loopback port, killed by PID when the test ends.
func startBackendProcess(t testing.TB) (addr string, proc *os.Process) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "backend")
	if out, err := exec.Command("go", "build", "-o", bin, "../../bench/cmd/backend").CombinedOutput(); err != nil {
		t.Fatalf("build backend: %v\n%s", err, out)
	}
	addrs := filepath.Join(dir, "addrs")
	cmd := exec.Command(bin, "-n", "1", "-addrs", addrs, "-name", "s")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start backend: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	testkit.Eventually(t, 10*time.Second, "backend process listening", func() bool {
		b, err := os.ReadFile(addrs)
		addr = strings.TrimSpace(string(b))
		return err == nil && addr != ""
	})
	return addr, cmd.Process
}

// TestGrayStoppedProcessHedgedE2E: the frozen row with a real process: one
// of three backends is a separate process stopped with SIGSTOP (the kernel
// still accepts its connections, nothing answers). With hedging after 50ms
// no client errs and the p99 stays under the hedge delay + the normal
// tail (hedgeBound).
func TestGrayStoppedProcessHedgedE2E(t *testing.T) {
	a, b := startGray(t, "a", 0, nil), startGray(t, "b", 0, nil)
	sAddr, proc := startBackendProcess(t)
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    retries: {attempts: 1, hedge: {after: 50ms}}
    timeouts: {connect: 1s, response: 2s}
`, yamlBackends(a.Addr, b.Addr, sAddr)))
	// Traffic first, so kelpie holds pooled connections to it, as it
	// would when a live backend freezes.
	normal := normalTail(t, ta, 100)
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %d: %v", proc.Pid, err)
	}
	hedgedLoad(t, ta, 150, fmt.Sprintf("backend process %d stopped, hedge after 50ms", proc.Pid), 50*time.Millisecond, normal)
}

// normalTail runs a paced load over ta and returns its p99.9: what the
// hedging bounds add to the hedge delay, measured on this machine in this
// run, so that it grows when the machine is busy. Not the p99: the hedged
// requests are the slowest few percent of a run with a frozen backend, so
// its p99 is a high percentile of their second attempts (a fixed 50ms
// failed at 105ms against 100ms under load, and so did a normal p99 of
// 10ms at 106ms).
func normalTail(t *testing.T, ta *testApp, requests int) time.Duration {
	t.Helper()
	run := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: requests, Between: paced}).Wait()
	if run.Failed() != 0 {
		t.Fatalf("before the fault: %s", run)
	}
	return run.Quantile(0.999)
}

// hedgeBound is the bound on the p99 while a backend is frozen or
// black-holed and hedging is on: the hedge delay plus the normal tail,
// taken as at least 50ms and at most 500ms, so that a client waiting for
// the 1s connect or 2s response timeout always breaks it.
func hedgeBound(after, normal time.Duration) time.Duration {
	return after + min(max(normal, 50*time.Millisecond), 500*time.Millisecond)
}

// normalWithout is normalTail with frozen drained, then back in rotation.
func normalWithout(t *testing.T, ta *testApp, frozen string) time.Duration {
	t.Helper()
	pool := ta.poolByName("web")
	if _, err := pool.Drain(frozen); err != nil {
		t.Fatal(err)
	}
	normal := normalTail(t, ta, 100)
	if _, err := pool.Undrain(frozen); err != nil {
		t.Fatal(err)
	}
	return normal
}

// hedgedLoad runs requests paced GETs through ta's upstream "web", one of
// whose backends never answers, and fails the test unless no client erred,
// at least one request was hedged (so the frozen backend got traffic) and
// the p99 stayed within hedgeBound(after, normal).
func hedgedLoad(t *testing.T, ta *testApp, requests int, label string, after, normal time.Duration) *testkit.Load {
	t.Helper()
	stats := ta.metrics.Upstream(ta.poolByName("web"))
	before := stats.Hedges.Load()
	run := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: requests, Between: paced}).Wait()
	hedges := stats.Hedges.Load() - before
	t.Logf("%s: %s; %d hedges; normal p99.9 %s", label, run, hedges, normal)
	if run.Failed() != 0 {
		t.Fatalf("client errors: %s", run)
	}
	if hedges == 0 {
		t.Fatal("no request was hedged: the frozen backend got no traffic")
	}
	if p99, bound := run.Quantile(0.99), hedgeBound(after, normal); p99 > bound {
		t.Fatalf("p99 %s, want under the hedge delay %s + the normal tail = %s", p99, after, bound)
	}
	return run
}

// TestGrayFrozenBackendAutoHedgeE2E: with `after: auto` the hedge delay is
// 100ms until measured, then the recent p95 of answers (a few ms here,
// clamped to 5ms): the p99 stays under the fallback + the normal tail
// (hedgeBound), and no request waits for the response timeout.
func TestGrayFrozenBackendAutoHedgeE2E(t *testing.T) {
	a, b := startGray(t, "a", 0, nil), startGray(t, "b", 0, nil)
	frozen := testkit.StartRaw(t, testkit.Hung)
	ta := startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    retries: {attempts: 1, hedge: {after: auto}}
    timeouts: {connect: 1s, response: 2s}
`, yamlBackends(a.Addr, b.Addr, frozen.Addr)))
	run := hedgedLoad(t, ta, 300, "frozen backend, hedge after auto", 100*time.Millisecond, normalWithout(t, ta, frozen.Addr))
	if worst := run.Quantile(1); worst >= time.Second {
		t.Fatalf("slowest request took %s: it waited for the response timeout", worst)
	}
}
