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
	if warm := testkit.StartLoad(ta.ProxyAddr, testkit.LoadOptions{Workers: 4, Requests: 30, Between: paced}).Wait(); warm.Failed() != 0 {
		t.Fatalf("before the stop: %s", warm)
	}
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %d: %v", proc.Pid, err)
	}
	hedgedLoad(t, ta, 150, fmt.Sprintf("backend process %d stopped, hedge after 50ms", proc.Pid), 50*time.Millisecond)
}

// startControl starts the control for the hedging bounds: a second kelpie
// over two healthy backends of its own, with the same timeouts.
func startControl(t testing.TB) *testApp {
	t.Helper()
	c1, c2 := startGray(t, "c1", 0, nil), startGray(t, "c2", 0, nil)
	return startApp(t, fmt.Sprintf(`
upstreams:
  - name: web
    backends:
%s    retries: {attempts: 1}
    timeouts: {connect: 1s, response: 2s}
`, yamlBackends(c1.Addr, c2.Addr)))
}

// pairedLoad runs paced GETs (8 workers, requests each) through ta and, at
// the same time, through a control (startControl), and returns both runs.
// With during, the load on ta runs until during returns instead. The
// control's latency is the normal of that moment: on a shared machine
// whose load swings, a baseline measured before the fault (p99.9 13ms) fell
// below a spike during it (p99 128ms).
func pairedLoad(t *testing.T, ta *testApp, requests int, during func()) (run, normal *testkit.Load) {
	t.Helper()
	ctl := startControl(t)
	o := testkit.LoadOptions{Workers: 8, Requests: requests, Between: paced}
	normal = testkit.StartLoad(ctl.ProxyAddr, testkit.LoadOptions{Workers: 8, Requests: 1 << 20, Between: paced})
	defer normal.Stop()
	if during != nil {
		o.Requests = 1 << 20
	}
	run = testkit.StartLoad(ta.ProxyAddr, o)
	defer run.Stop()
	if during != nil {
		during()
		run.Stop()
	}
	run.Wait()
	normal.Stop()
	if normal.Failed() != 0 {
		t.Fatalf("the control saw errors: %s", normal)
	}
	return run, normal
}

// hedgeBound is the bound on the p99 while a backend is frozen or
// black-holed and hedging is on: the hedge delay plus the normal tail, the
// control's p99.9 (not its p99: the hedged requests are the slowest few
// percent of the run, so its p99 is a high percentile of their second
// attempts), taken as at least 50ms and at most 500ms, so that a client
// waiting for the 1s connect or 2s response timeout always breaks it.
func hedgeBound(after time.Duration, normal *testkit.Load) time.Duration {
	return after + min(max(normal.Quantile(0.999), 50*time.Millisecond), 500*time.Millisecond)
}

// hedgedLoad runs requests paced GETs through ta's upstream "web", one of
// whose backends never answers, paired with a control, and fails the test
// unless no client erred, at least one request was hedged (so the frozen
// backend got traffic) and the p99 stayed within hedgeBound.
func hedgedLoad(t *testing.T, ta *testApp, requests int, label string, after time.Duration) *testkit.Load {
	t.Helper()
	stats := ta.metrics.Upstream(ta.poolByName("web"))
	before := stats.Hedges.Load()
	run, normal := pairedLoad(t, ta, requests, nil)
	hedges := stats.Hedges.Load() - before
	t.Logf("%s: %s; %d hedges; control: p99 %s p99.9 %s", label, run, hedges, normal.Quantile(0.99), normal.Quantile(0.999))
	if run.Failed() != 0 {
		t.Fatalf("client errors: %s", run)
	}
	if hedges == 0 {
		t.Fatal("no request was hedged: the frozen backend got no traffic")
	}
	if p99, bound := run.Quantile(0.99), hedgeBound(after, normal); p99 > bound {
		t.Fatalf("p99 %s, want under the hedge delay %s + the control's p99.9 = %s", p99, after, bound)
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
	run := hedgedLoad(t, ta, 300, "frozen backend, hedge after auto", 100*time.Millisecond)
	if worst := run.Quantile(1); worst >= time.Second {
		t.Fatalf("slowest request took %s: it waited for the response timeout", worst)
	}
}
