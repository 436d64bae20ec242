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
func startBackendProcess(t *testing.T) (addr string, proc *os.Process) {
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
// no client errs and the p99 stays under the hedge delay + 50ms.
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
	warm := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 4, Requests: 30, Between: paced}).Wait()
	if warm.Failed() != 0 {
		t.Fatalf("before the stop: %s", warm)
	}
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %d: %v", proc.Pid, err)
	}
	hedgedLoad(t, ta, 150, fmt.Sprintf("backend process %d stopped, hedge after 50ms", proc.Pid), 100*time.Millisecond, "hedge delay + 50ms")
}

// hedgedLoad runs requests paced GETs through ta's upstream "web", one of
// whose backends never answers, and fails the test unless no client erred,
// at least one request was hedged (so the frozen backend got traffic) and
// the p99 stayed at or under p99Max (why says what that bound is).
func hedgedLoad(t *testing.T, ta *testApp, requests int, label string, p99Max time.Duration, why string) *testkit.Load {
	t.Helper()
	stats := ta.metrics.Upstream(ta.poolByName("web"))
	before := stats.Hedges.Load()
	run := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: requests, Between: paced}).Wait()
	hedges := stats.Hedges.Load() - before
	t.Logf("%s: %s; %d hedges", label, run, hedges)
	if run.Failed() != 0 {
		t.Fatalf("client errors: %s", run)
	}
	if hedges == 0 {
		t.Fatal("no request was hedged: the frozen backend got no traffic")
	}
	if p99 := run.Quantile(0.99); p99 > p99Max {
		t.Fatalf("p99 %s, want under %s = %s", p99, why, p99Max)
	}
	return run
}

// TestGrayFrozenBackendAutoHedgeE2E: with `after: auto` the hedge delay is
// 100ms until measured, then the recent p95 of answers (a few ms here,
// clamped to 5ms): a frozen backend costs no client more than the fallback
// + 50ms, and no request waits for the response timeout.
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
	run := hedgedLoad(t, ta, 300, "frozen backend, hedge after auto", 150*time.Millisecond, "the first delay (100ms) + 50ms")
	if worst := run.Quantile(1); worst >= time.Second {
		t.Fatalf("slowest request took %s: it waited for the response timeout", worst)
	}
}
